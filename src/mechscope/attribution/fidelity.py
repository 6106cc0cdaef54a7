"""Fidelity of a transcoder set: NMSE of each layer's MLP-output prediction and CE loss recovered by the
full replacement (every covered MLP replaced at once, no error terms).

``ce_recovered = (CE_ablated - CE_replaced) / (CE_ablated - CE_clean)`` where *ablated* zeroes the covered
MLP outputs: 1 means the replacement loses nothing, 0 no better than deleting those MLPs. As for
``dictionaries.evals``: when ablating barely moves the loss (gap < ``CE_GAP_WARN`` nats) the ratio divides by
almost nothing, so a warning is raised and recorded under ``"warnings"``; ``ce_delta`` (replaced - clean) is the
figure to read then. A negative ``ce_recovered`` (the replacement is worse than deleting the MLPs), and a replaced loss above a uniform
guess (``ln d_vocab``), are recorded too.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from mechscope.attribution.codes import layer_codes
from mechscope.dictionaries.clt import CrossLayerTranscoder
from mechscope.dictionaries.evals import CE_GAP_WARN
from mechscope.dictionaries.replacement import replacement
from mechscope.dictionaries.transcoder import Transcoder


def _ce(logits: Tensor, tokens: Tensor) -> float:
    return float(torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten()))


def ce_notes(layers: Sequence[int], clean: float, ablated: float, replaced: float,
             d_vocab: int | None = None) -> list[str]:
    """Why ``ce_recovered`` should not be read at face value: an ablation gap under ``CE_GAP_WARN`` nats, a
    replacement worse than the ablation (a negative ratio), or a replaced loss above a uniform guess over the
    ``d_vocab`` tokens (``ln d_vocab``: the ratio can look fine because ablating is even worse); empty when the
    ratio is meaningful. The uniform-guess note needs a clean model that beats a uniform guess (an untrained
    model's clean loss is already above it, and replacing its MLPs breaks nothing)."""
    notes = []
    if d_vocab is not None and replaced > math.log(d_vocab) >= clean:
        notes.append(f"the replaced model's CE {replaced:.4f} is above a uniform guess (ln {d_vocab} = "
                     f"{math.log(d_vocab):.4f}): ce_recovered compares two broken models; read ce_delta "
                     f"({replaced - clean:+.4f})")
    return _ratio_notes(layers, clean, ablated, replaced) + notes


def _ratio_notes(layers: Sequence[int], clean: float, ablated: float, replaced: float) -> list[str]:
    gap = ablated - clean
    if abs(gap) < CE_GAP_WARN:
        return [f"ce_recovered is unreliable: zero-ablating layers {list(layers)} changes the loss by only "
                f"{gap:+.4f} nats (clean {clean:.4f}, ablated {ablated:.4f}); read ce_delta ({replaced - clean:+.4f})"]
    if (ablated - replaced) / gap < 0:
        return [f"the full replacement (CE {replaced:.4f}) is worse than zero-ablating layers {list(layers)} "
                f"(CE {ablated:.4f}): ce_recovered {(ablated - replaced) / gap:.3f} < 0"]
    return []


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
    recovered = (ce_abl - ce_rep) / gap if abs(gap) > 1e-12 else float("nan")
    notes = ce_notes(layers, ce_clean, ce_abl, ce_rep, int(model.cfg.d_vocab))
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return {"layers": layers, "nmse": nmse, "ce_clean": ce_clean, "ce_replaced": ce_rep, "ce_ablated": ce_abl,
            "ce_delta": ce_rep - ce_clean, "ce_recovered": recovered, "n_tokens": int(tokens.numel()),
            "warnings": notes}


__all__ = ["ce_notes", "replacement_fidelity"]
