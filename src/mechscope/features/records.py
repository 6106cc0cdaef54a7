"""Turn harvest accumulators into database rows (``features`` and ``examples``), JSON columns included.

The tensors are converted to Python lists once (``tolist``); the per-row loops here only serialise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from mechscope.features.stats import StatsConfig

Vocab = Callable[[list[int]], list[str]]


def _round(values: list[float], digits: int = 5) -> list[float]:
    return [round(float(v), digits) for v in values]


def feature_rows(name: str, state: dict[str, Tensor], cfg: StatsConfig,
                 logits: tuple[Tensor, Tensor, Tensor, Tensor] | None, cos: tuple[Tensor, Tensor] | None,
                 coact: tuple[Tensor, Tensor] | None, vocab: Vocab) -> list[tuple[Any, ...]]:
    """One ``features`` row per feature."""
    n = max(int(state["n_tokens"]), 1)
    n_fired = state["n_fired"].tolist()
    density = (state["n_fired"].double() / n).tolist()
    mean = (state["act_sum"] / n).tolist()
    max_act = state["top_vals"][:, 0].clamp_min(0).tolist()
    edges = _round(cfg.edges().tolist(), 6)
    hist = state["hist"].tolist()
    top_l = bot_l = None
    if logits is not None:
        tv, ti, bv, bi = (t.tolist() for t in logits)
        top_l = [json.dumps([[s, round(v, 4)] for s, v in zip(vocab(i), vals, strict=True)]) for i, vals in zip(ti, tv)]
        bot_l = [json.dumps([[s, round(v, 4)] for s, v in zip(vocab(i), vals, strict=True)]) for i, vals in zip(bi, bv)]

    def neighbours(pair: tuple[Tensor, Tensor] | None) -> list[str | None]:
        if pair is None:
            return [None] * len(n_fired)
        vals, idx = pair[0].tolist(), pair[1].tolist()
        return [json.dumps([[j, round(v, 4)] for j, v in zip(i, vs, strict=True)]) for i, vs in zip(idx, vals)]

    ncos, ncoact = neighbours(cos), neighbours(coact)
    return [(name, i, density[i], mean[i], max_act[i], n_fired[i], json.dumps({"edges": edges, "counts": hist[i]}),
             top_l[i] if top_l else None, bot_l[i] if bot_l else None, ncos[i], ncoact[i])
            for i in range(len(n_fired))]


def _window(tokens: list[int], acts: list[float], focus: int, vocab: Vocab) -> tuple[int, str, str]:
    """Drop padding (-1) from a window; returns the focus index in the trimmed window and JSON columns."""
    keep = [j for j, t in enumerate(tokens) if t >= 0]
    return (keep.index(focus), json.dumps(vocab([tokens[j] for j in keep])),
            json.dumps(_round([acts[j] for j in keep], 4)))


def example_rows(name: str, state: dict[str, Tensor], groups: Tensor, cfg: StatsConfig,
                 vocab: Vocab) -> list[tuple[Any, ...]]:
    """``examples`` rows: the positive top-k (kind ``top``) and the quantile samples (kind ``quantile``).

    A quantile sample's ordinal is its rank by activation within its feature's sample (0 = lowest).
    """
    rows: list[tuple[Any, ...]] = []
    vals, tok = state["top_vals"].tolist(), state["top_tok"].tolist()
    wt, wa = state["top_win_tok"].tolist(), state["top_win_act"].tolist()
    for f, k in ((state["top_vals"] > 0) & (state["top_tok"] >= 0)).nonzero().tolist():
        focus, toks, acts = _window(wt[f][k], wa[f][k], cfg.left, vocab)
        rows.append((name, f, "top", k, None, vals[f][k], tok[f][k], focus, toks, acts))
    valid = groups >= 0
    order = state["res_vals"].masked_fill(~valid, float("inf")).argsort(dim=1, stable=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1]).expand_as(order).contiguous())
    vals, tok, grp, rank = (state["res_vals"].tolist(), state["res_tok"].tolist(), groups.tolist(), ranks.tolist())
    wt, wa = state["res_win_tok"].tolist(), state["res_win_act"].tolist()
    for f, slot in valid.nonzero().tolist():
        focus, toks, acts = _window(wt[f][slot], wa[f][slot], cfg.left, vocab)
        rows.append((name, f, "quantile", rank[f][slot], grp[f][slot], vals[f][slot], tok[f][slot], focus, toks, acts))
    return rows


__all__ = ["feature_rows", "example_rows"]
