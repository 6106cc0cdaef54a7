"""``replacement``: splice a full set of transcoders (a CLT, or per-layer transcoders) into every MLP at once.

The *replacement model* (Ameisen et al. 2025) computes each MLP output from sparse features instead of the
MLP. With ``use_error_term=True`` each replaced output is ``recons + error``, ``error = mlp_out - recons_clean``
(``recons_clean``: the prediction with no edits), so with no edits the model is the original model (to float rounding:
hooking a norm's output runs it unfused), and an edit of a feature changes the output by exactly the change of the prediction.

Per-layer transcoders go through :func:`mechscope.dictionaries.splice.splice_at` (one per transcoder; a subset
of layers is allowed: the other MLPs stay). A CLT's layer ``s`` features are encoded when its input hook fires
and decoded into every later layer's output hook, so an edit of ``blocks.s.hook_mlp_out.hook_sae_acts_post``
reaches all layers ``t >= s``. Hook points mounted per written hook ``W`` (as for ``splice``)::

    W.hook_sae_acts_post   this layer's features [batch pos d_sae]
    W.hook_sae_error       target - clean prediction (use_error_term=True)
    W.hook_sae_output      what the model reads at W
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from mechscope.dictionaries.clt import CrossLayerTranscoder
from mechscope.dictionaries.splice import combine, splice_at, splice_sites
from mechscope.dictionaries.transcoder import Transcoder
from mechscope.errors import ConfigError
from mechscope.hooks.point import HookPoint

TranscoderSet = CrossLayerTranscoder | Sequence[Transcoder]


def check_for_model(model: Any, transcoders: TranscoderSet) -> None:
    """Raise ``ConfigError`` unless the transcoders fit ``model`` (hooks exist, widths, model name)."""
    items: list[Any] = [transcoders] if isinstance(transcoders, CrossLayerTranscoder) else list(transcoders)
    if not items:
        raise ConfigError("an empty transcoder set; give a CrossLayerTranscoder or per-layer Transcoders")
    name = getattr(model.cfg, "model_name", None) or getattr(model.cfg, "name", None)
    for t in items:
        if not isinstance(t, (Transcoder, CrossLayerTranscoder)):
            raise ConfigError(f"a transcoder set holds Transcoder or CrossLayerTranscoder objects, got "
                              f"{type(t).__name__}")
        if name and t.cfg.model_name and not _same_model(t.cfg.model_name, name):
            raise ConfigError(f"these transcoders were trained on model {t.cfg.model_name!r}, not {name!r}; "
                              f"use a transcoder set trained for {name!r}")
        if t.cfg.d_in != model.cfg.d_model or t.cfg.d_output != model.cfg.d_model:
            raise ConfigError(f"transcoder widths d_in={t.cfg.d_in}, d_out={t.cfg.d_output} do not match this "
                              f"model's d_model={model.cfg.d_model}; it was trained for another model")
    if isinstance(transcoders, CrossLayerTranscoder):
        cfg = transcoders.cfg
        if cfg.n_layers != model.cfg.n_layers:
            raise ConfigError(f"this CLT covers n_layers={cfg.n_layers} but the model has {model.cfg.n_layers}")
        reads, writes = clt_hooks(transcoders)
        model.hook_names([*reads, *writes])
    else:
        layers = [splice_sites(model, t).writes for t in items]
        flat = [w for ws in layers for w in ws]
        if len(set(flat)) != len(flat):
            raise ConfigError(f"two transcoders replace the same hook: {sorted(flat)}")


def _same_model(a: str, b: str) -> bool:
    """Names of one model as registries and files spell them (``smollm2-135m`` ~ ``SmolLM2 135M Instruct``)."""
    na, nb = ("".join(ch for ch in x.lower() if ch.isalnum()) for x in (a, b))
    return na in nb or nb in na


def clt_hooks(clt: CrossLayerTranscoder) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(input hooks, output hooks)`` of a CLT: from its config, else ``ln2.hook_normalized`` / ``hook_mlp_out``."""
    n = clt.cfg.n_layers
    reads = clt.cfg.hook_names or tuple(f"blocks.{i}.ln2.hook_normalized" for i in range(n))
    writes = clt.cfg.target_hook_names or tuple(f"blocks.{i}.hook_mlp_out" for i in range(n))
    return reads, writes


@contextlib.contextmanager
def replacement(model: Any, transcoders: TranscoderSet, *, use_error_term: bool = True) -> Iterator[dict[str, str]]:
    """Replace every covered MLP output by its transcoder prediction for a ``with`` block.

    Yields ``{written hook: prefix of its mounted points}``. See the module docstring.
    """
    check_for_model(model, transcoders)
    if isinstance(transcoders, CrossLayerTranscoder):
        with _splice_clt(model, transcoders, use_error_term) as names:
            yield names
        return
    with contextlib.ExitStack() as stack:
        names = {}
        for t in transcoders:
            s = stack.enter_context(splice_at(model, t, splice_sites(model, t), use_error_term=use_error_term))
            names[s.sites.writes[0]] = s.sites.writes[0]
        yield names


@contextlib.contextmanager
def _splice_clt(model: Any, clt: CrossLayerTranscoder, use_error_term: bool) -> Iterator[dict[str, str]]:
    reads, writes = clt_hooks(clt)
    n, cfg = clt.cfg.n_layers, clt.cfg
    acts: list[Tensor | None] = [None] * n  # possibly edited activations per layer
    clean: list[Tensor | None] = [None] * n  # unedited
    inputs: list[Tensor | None] = [None] * n
    acts_hp = [HookPoint() for _ in range(n)]
    err_hp = [HookPoint() if use_error_term else None for _ in range(n)]
    out_hp = [HookPoint() for _ in range(n)]
    scales = clt.output_scales()  # per target layer

    def read(layer: int):  # noqa: ANN202
        def fn(x: Tensor, hook: HookPoint) -> None:
            xs = clt.scaled_input(x)  # [b p d]
            pre = torch.addmm(clt.b_enc[layer], xs.reshape(-1, cfg.d_in), clt.W_enc[layer])
            a = clt.activate(pre).view(*xs.shape[:-1], cfg.d_sae)
            clean[layer], inputs[layer] = a, xs
            acts[layer] = acts_hp[layer](a)
        return fn

    def decode(layer: int, src: list[Tensor | None]) -> Tensor:
        idx = (clt.pair_target == layer).nonzero()[:, 0]  # pairs (s, layer), s = 0..layer in order
        if any(src[s] is None for s in range(layer + 1)):
            raise ConfigError(f"CLT splice: {writes[layer]!r} ran before the inputs of layers <= {layer}")
        stacked = torch.stack([src[s] for s in range(layer + 1)])  # type: ignore[misc]  # [s b p k]
        out = torch.einsum("sbpk,skd->bpd", stacked, clt.W_dec[idx]) + clt.b_dec[layer]
        if cfg.skip:
            out = out + inputs[layer] @ clt.W_skip[layer]  # type: ignore[operator]
        return out / scales[layer]

    def write(layer: int):  # noqa: ANN202
        def fn(y: Tensor, hook: HookPoint) -> Tensor:
            recons = decode(layer, acts)
            recons_clean = None
            if use_error_term:
                edited = any(acts[s] is not clean[s] for s in range(layer + 1))
                recons_clean = decode(layer, clean).detach() if edited else recons.detach()
            return combine(recons, recons_clean, y, err_hp[layer], out_hp[layer])
        return fn

    def forget(module: Any, args: Any, out: Any) -> None:
        for lst in (acts, clean, inputs):
            lst[:] = [None] * n

    with contextlib.ExitStack() as stack:
        for layer in range(n):
            points = {"hook_sae_acts_post": acts_hp[layer], "hook_sae_output": out_hp[layer]}
            if err_hp[layer] is not None:
                points["hook_sae_error"] = err_hp[layer]  # type: ignore[assignment]
            stack.enter_context(model.mount_hook_points(writes[layer], points))
        fwd = [(reads[i], read(i)) for i in range(n)] + [(writes[i], write(i)) for i in range(n)]
        stack.enter_context(model.hooks(fwd=fwd))
        stack.callback(model.register_forward_hook(forget).remove)
        yield {w: w for w in writes}


__all__ = ["replacement", "check_for_model", "clt_hooks", "TranscoderSet"]
