"""Fidelity of a transcoder set: NMSE of each layer's MLP-output prediction and CE loss recovered by the
full replacement (every covered MLP replaced at once, no error terms).

``ce_recovered = (CE_ablated - CE_replaced) / (CE_ablated - CE_clean)`` where *ablated* zeroes the covered
MLP outputs: 1 means the replacement loses nothing, 0 no better than deleting those MLPs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from mechscope.attribution.codes import layer_codes
from mechscope.dictionaries.clt import CrossLayerTranscoder
from mechscope.dictionaries.replacement import replacement
from mechscope.dictionaries.transcoder import Transcoder


def _ce(logits: Tensor, tokens: Tensor) -> float:
    return float(torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten()))


@torch.no_grad()
def replacement_fidelity(model: Any, transcoders: CrossLayerTranscoder | Sequence[Transcoder],
                         tokens: Int[Tensor, "batch pos"]) -> dict[str, Any]:
    """``{"nmse": {layer: ...}, "ce_clean", "ce_replaced", "ce_ablated", "ce_recovered", "layers"}``."""
    codes = layer_codes(model, transcoders)
    layers = [lc.layer for lc in codes]
    outs = [f"blocks.{i}.hook_mlp_out" for i in layers]
    logits, cache = model.run_with_cache(tokens, names=outs)
    ce_clean = _ce(logits, tokens)
    with replacement(model, transcoders, use_error_term=True):
        _, rc = model.run_with_cache(tokens, names=[f"{o}.hook_sae_error" for o in outs])
    nmse = {}
    for i, o in zip(layers, outs):
        target = cache[o].double()
        err = rc[f"{o}.hook_sae_error"].double()
        nmse[i] = float(err.pow(2).sum() / (target - target.mean((0, 1))).pow(2).sum().clamp_min(1e-30))
    with replacement(model, transcoders, use_error_term=False):
        ce_rep = _ce(model(tokens), tokens)
    with model.hooks(fwd=[(o, lambda x, hook: torch.zeros_like(x)) for o in outs]):
        ce_abl = _ce(model(tokens), tokens)
    gap = ce_abl - ce_clean
    return {"layers": layers, "nmse": nmse, "ce_clean": ce_clean, "ce_replaced": ce_rep, "ce_ablated": ce_abl,
            "ce_recovered": (ce_abl - ce_rep) / gap if abs(gap) > 1e-12 else float("nan"),
            "n_tokens": int(tokens.numel())}


__all__ = ["replacement_fidelity"]
