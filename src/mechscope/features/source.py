"""What a harvest measures: the latents of a dictionary at its hook, or the neurons of a hook (identity).

A ``FeatureSet`` bundles the hook it reads, how activations become feature activations (``encode``), and each
feature's *write direction* in the residual stream (for logit effects and decoder-cosine neighbours):

* a dictionary at a residual-width hook writes ``W_dec[i]`` (``blocks.L.hook_resid_*``, ``hook_attn_out``,
  ``hook_mlp_out``);
* a dictionary at ``blocks.L.mlp.hook_post`` writes ``W_dec[i] @ W_out[L]``; a neuron there writes ``W_out[L][i]``
  (the neuron is the identity dictionary);
* anywhere else the write direction is the decoder row itself and logit effects are not defined (None);
* layer ``L`` of a cross-layer transcoder (``clt_layer_features``) reads the hook that CLT layer reads and writes
  the sum of its decoder rows into every layer ``t >= L`` (model units, after each target's output scale): what
  the feature adds to the residual stream through the MLP outputs it replaces.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import ConfigError, ShapeError

_RESID = re.compile(r"^(blocks\.\d+\.(hook_resid_(pre|mid|post)|hook_attn_out|hook_mlp_out)|hook_embed)$")
_MLP_POST = re.compile(r"^blocks\.(\d+)\.mlp\.hook_post$")


@dataclass
class FeatureSet:
    """Features read at one hook of one model (see the module docstring)."""

    name: str
    """Name in the database (a dictionary's directory name, or ``neurons:<hook>``)."""
    kind: str
    """``sae`` (a dictionary's latents), ``clt`` (one layer of a cross-layer transcoder) or ``neurons``."""
    hook: str
    """The hook whose activations are encoded."""
    n_features: int
    """Number of features (``d_sae`` or the hook's width)."""
    encode: Callable[[Tensor], Tensor]
    """``[n d_in] -> [n n_features]`` feature activations."""
    directions: Tensor
    """``[n_features d]``: what each feature writes (residual space when ``in_residual``)."""
    in_residual: bool
    """Whether ``directions`` live in the residual stream (then logit effects are defined)."""
    config: dict[str, Any]
    """What is recorded in the database about this feature set."""


def _check_hook(model: Any, hook: str) -> str:
    names = model.hook_names([hook])  # HookNameError with close matches when the model lacks it
    return str(names[0])


def residual_directions(model: Any, hook: str, rows: Tensor) -> tuple[Tensor, bool]:
    """Map rows ``[n d_in]`` written at ``hook`` into the residual stream, if the hook allows it."""
    m = _MLP_POST.match(hook)
    if m:
        w_out = model.blocks[int(m.group(1))].mlp.W_out.detach().float()  # [d_mlp d_model]
        return rows.float() @ w_out, True
    if _RESID.match(hook) and rows.shape[-1] == model.cfg.d_model:
        return rows.float(), True
    return rows.float(), False


def dictionary_features(model: Any, dictionary: Any, name: str, *, hook: str | None = None) -> FeatureSet:
    """The latents of ``dictionary`` read at ``hook`` (default: the dictionary's own ``hook_name``)."""
    if getattr(dictionary.cfg, "architecture", None) == "clt":
        raise ConfigError(f"dictionary {name!r} is a cross-layer transcoder: harvest it per layer "
                          "(clt_layer_features; `mechscope features harvest --layers all|L1,L2`)")
    where = hook or dictionary.cfg.hook_name
    if where is None:
        raise ConfigError(f"dictionary {name!r} records no hook_name; pass the hook to read")
    where = _check_hook(model, where)
    if dictionary.W_dec.dim() != 2:
        raise ConfigError(f"dictionary {name!r} has a {dictionary.W_dec.dim()}-d decoder; the feature harvest "
                          "reads one decoder row per latent (SAEs and transcoders, not crosscoders)")
    dirs, in_resid = residual_directions(model, getattr(dictionary.cfg, "target_hook_name", None) or where,
                                         dictionary.W_dec.detach() / dictionary.cfg.output_scale)

    def encode(x: Tensor) -> Tensor:
        return dictionary.encode(x.to(dictionary.W_enc.dtype)).float()

    return FeatureSet(name=name, kind="sae", hook=where, n_features=int(dictionary.cfg.d_sae), encode=encode,
                      directions=dirs, in_residual=in_resid, config=dictionary.cfg.to_dict())


def clt_layer_features(model: Any, clt: Any, layer: int, base: str) -> FeatureSet:
    """Layer ``layer`` of cross-layer transcoder ``clt`` as a feature set named ``<base>:L<layer>``.

    Reads the hook the CLT reads at that layer (the graph's ``read_hooks``), encodes exactly as the CLT does
    (``activate(input_scale * x @ W_enc[L] + b_enc[L])``, TopK per layer included) and writes the sum of the
    layer's decoder rows over its target layers, in model units.
    """
    from mechscope.dictionaries.clt import CrossLayerTranscoder
    from mechscope.dictionaries.replacement import check_for_model, clt_hooks

    if not isinstance(clt, CrossLayerTranscoder):
        raise ConfigError(f"{base!r} is a {clt.cfg.architecture} dictionary, not a cross-layer transcoder (clt)")
    n = int(clt.cfg.n_layers)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise ConfigError(f"CLT {base!r} has layers 0..{n - 1}; layer {layer!r} is out of range")
    check_for_model(model, clt)  # model name, widths: a CLT trained for another model is refused
    reads, writes = clt_hooks(clt)
    where = _check_hook(model, reads[layer])
    rows = clt.decoder_vectors(layer).detach().sum(1)  # [d_sae d_out]: zeros before `layer`, model units
    in_resid = all(residual_directions(model, w, rows[:1])[1] for w in writes[layer:])
    dirs = rows.float()
    w_enc, b_enc, scale, d_in = clt.W_enc[layer].detach(), clt.b_enc[layer].detach(), clt.cfg.input_scale, clt.cfg.d_in

    def encode(x: Tensor) -> Tensor:
        if x.shape[-1] != d_in:
            raise ShapeError(f"CLT layer {layer} reads width {d_in} at {where}, got {tuple(x.shape)}")
        xs = x.to(w_enc.dtype)
        pre = (xs * scale if scale != 1.0 else xs) @ w_enc + b_enc
        return clt.activate(pre).float()

    config = {**clt.cfg.to_dict(), "clt_layer": layer, "hook_name": where}
    return FeatureSet(name=f"{base}:L{layer}", kind="clt", hook=where, n_features=int(clt.cfg.d_sae),
                      encode=encode, directions=dirs, in_residual=in_resid, config=config)


def neuron_features(model: Any, hook: str, width: int | None = None) -> FeatureSet:
    """The neurons of ``hook`` (``blocks.L.mlp.hook_post``: MLP neurons; any per-position hook works)."""
    where = _check_hook(model, hook)
    if width is None:
        m = _MLP_POST.match(where)
        width = model.cfg.mlp.d_mlp if m and model.cfg.mlp is not None else model.cfg.d_model
    eye = torch.eye(int(width))
    dirs, in_resid = residual_directions(model, where, eye)

    def encode(x: Tensor) -> Tensor:
        if x.shape[-1] != width:
            raise ConfigError(f"hook {where} has width {x.shape[-1]}, expected {width}")
        return x.float()

    return FeatureSet(name=f"neurons:{where}", kind="neurons", hook=where, n_features=int(width), encode=encode,
                      directions=dirs, in_residual=in_resid, config={"hook_name": where, "d_sae": int(width)})


__all__ = ["FeatureSet", "clt_layer_features", "dictionary_features", "neuron_features", "residual_directions"]
