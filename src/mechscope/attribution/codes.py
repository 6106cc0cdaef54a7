"""A uniform view of a transcoder set (a CLT, or per-layer ``Transcoder``s on a subset of layers) for graphs.

``LayerCode`` holds, for one source layer ``s``, what the attribution graph needs in the *model's* units:
the encoder (``pre = in_scale * x @ W_enc + b_enc`` on the activation at ``read_hook``), the activation
function, and for every target layer ``t >= s`` the decoder block ``[d_sae d_model]`` (already divided by the
output scale), the decoder bias and the optional linear skip of layer ``t``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from mechscope.dictionaries.clt import CrossLayerTranscoder
from mechscope.dictionaries.replacement import check_for_model, clt_hooks
from mechscope.dictionaries.transcoder import Transcoder
from mechscope.errors import ConfigError


@dataclass
class LayerCode:
    """One source layer's features (see the module docstring)."""

    layer: int
    read_hook: str
    W_enc: Tensor
    """[d_in d_sae]"""
    b_enc: Tensor
    """[d_sae]"""
    in_scale: float
    activate: Callable[[Tensor], Tensor]
    decoders: dict[int, Tensor]
    """target layer -> [d_sae d_model] in model units."""
    b_dec: Tensor | None
    """[d_model] bias this code adds to its own layer's output (model units), or None."""
    W_skip: Tensor | None
    """[d_in d_model] linear skip into its own layer's output (model units, applied to the raw input), or None."""


def layer_codes(model: Any, transcoders: CrossLayerTranscoder | Sequence[Transcoder]) -> list[LayerCode]:
    """``LayerCode`` per covered layer, sorted by layer; ``ConfigError`` for a set made for another model."""
    check_for_model(model, transcoders)
    out: list[LayerCode] = []
    if isinstance(transcoders, CrossLayerTranscoder):
        clt = transcoders
        c = clt.cfg
        reads, writes = clt_hooks(clt)
        _check_writes(writes)
        scales = clt.output_scales()  # per target layer
        for s in range(c.n_layers):
            dv = clt.decoder_vectors(s)  # [d_sae n_layers d_out], model units
            decs = {t: dv[:, t] for t in range(s, c.n_layers)}
            skip = clt.W_skip[s] * (c.input_scale / scales[s]) if c.skip else None
            out.append(LayerCode(s, reads[s], clt.W_enc[s], clt.b_enc[s], c.input_scale, clt.activate, decs,
                                 clt.b_dec[s] / scales[s], skip))
        return out
    for t in transcoders:
        tc = t.cfg
        if tc.hook_name is None or tc.target_hook_name is None:
            raise ConfigError("a transcoder in a graph set must name hook_name and target_hook_name in its config")
        layer = _write_layer(tc.target_hook_name)
        tskip = t.W_skip * (tc.input_scale / tc.output_scale) if tc.skip else None
        out.append(LayerCode(layer, tc.hook_name, t.W_enc, t.b_enc, tc.input_scale, t.activate,
                             {layer: t.W_dec / tc.output_scale}, t.b_dec / tc.output_scale, tskip))
    out.sort(key=lambda lc: lc.layer)
    return out


def _write_layer(hook: str) -> int:
    parts = hook.split(".")
    if len(parts) != 3 or parts[0] != "blocks" or parts[2] != "hook_mlp_out" or not parts[1].isdigit():
        raise ConfigError(f"graph transcoders must replace blocks.L.hook_mlp_out, got target {hook!r}")
    return int(parts[1])


def _check_writes(writes: Sequence[str]) -> None:
    for i, w in enumerate(writes):
        if _write_layer(w) != i:
            raise ConfigError(f"CLT target hook {i} is {w!r}; a graph CLT writes blocks.{i}.hook_mlp_out")


__all__ = ["LayerCode", "layer_codes"]
