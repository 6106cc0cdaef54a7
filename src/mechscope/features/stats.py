"""Streaming per-feature statistics with bounded memory: every update is a handful of tensor ops over a batch.

State (``F`` features, ``K`` top examples, ``R`` reservoir samples, ``W`` window width):

* ``n_tokens``, ``n_fired [F]``, ``act_sum [F]``: density and mean activation (over all tokens);
* ``hist [F n_bins]``: counts of positive activations in log-spaced bins ``edges`` (fixed in advance, so a
  stream needs no second pass; values below / above the range fall in the first / last bin);
* ``top_*``: the ``K`` largest activations with their global token index and a token window with per-token
  activations, merged batch by batch with ``torch.topk`` over ``[old K + batch candidates]``;
* ``res_*``: a uniform sample of ``R`` positive activations per feature by *bottom-k sampling*: every
  (token, feature) gets a deterministic hash key and the ``R`` smallest keys are kept, a merge as simple as
  top-k and independent of batching (so resume and brute force agree exactly). Sorted by activation, the
  sample gives the quantile groups (delphi samples its examples this way);
* ``coact [F F]``: how many tokens each pair of features fires on together (skipped past ``max_coact``).

Tokens are addressed by a global index ``seq * seq_len + pos``. Positions a harvest does not keep (the
attention sink at position 0) are excluded from every statistic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

_I64_MAX = torch.iinfo(torch.int64).max


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_M1, _M2, _M3 = _signed(0x9E3779B97F4A7C15), _signed(0xC2B2AE3D27D4EB4F), _signed(0xBF58476D1CE4E5B9)


def sample_keys(token_index: Int[Tensor, " n"], n_features: int, seed: int) -> Int[Tensor, "n f"]:
    """Deterministic pseudo-random non-negative keys ``[n F]`` of (token, feature) pairs (splitmix-style)."""
    t = token_index.long()[:, None] * _M1
    f = torch.arange(n_features, dtype=torch.long)[None, :] * _M2
    x = (t ^ f) + seed
    x = x ^ (x >> 31)
    x = x * _M3
    x = x ^ (x >> 29)
    return x & _I64_MAX


@dataclass(frozen=True, kw_only=True)
class StatsConfig:
    """Sizes of the per-feature state."""

    top_k: int = 20
    """Max-activating examples kept per feature."""
    reservoir: int = 40
    """Uniform samples of positive activations kept per feature (split into ``n_quantiles`` groups)."""
    n_quantiles: int = 10
    """Quantile groups the reservoir is split into (delphi: 10)."""
    left: int = 12
    """Tokens of context before the example token."""
    right: int = 4
    """Tokens of context after it."""
    n_bins: int = 40
    """Histogram bins (log-spaced between ``10**log_lo`` and ``10**log_hi``)."""
    log_lo: float = -3.0
    """log10 of the lowest bin edge."""
    log_hi: float = 3.0
    """log10 of the highest bin edge."""
    max_coact: int = 8192
    """Co-activation counts are kept only for at most this many features (memory ``F**2`` doubles)."""
    seed: int = 0
    """Seed of the sample keys."""

    @property
    def window(self) -> int:
        """Width of an example window."""
        return self.left + 1 + self.right

    def edges(self) -> Tensor:
        """Histogram bin edges ``[n_bins + 1]``."""
        return torch.logspace(self.log_lo, self.log_hi, self.n_bins + 1, dtype=torch.float64)


def new_state(n_features: int, cfg: StatsConfig) -> dict[str, Tensor]:
    """Empty accumulators for ``n_features`` features."""
    f, k, r, w = n_features, cfg.top_k, cfg.reservoir, cfg.window
    state = {
        "n_tokens": torch.zeros((), dtype=torch.long),
        "n_fired": torch.zeros(f, dtype=torch.long),
        "act_sum": torch.zeros(f, dtype=torch.float64),
        "hist": torch.zeros(f, cfg.n_bins, dtype=torch.long),
        "top_vals": torch.full((f, k), float("-inf")),
        "top_tok": torch.full((f, k), -1, dtype=torch.long),
        "top_win_tok": torch.full((f, k, w), -1, dtype=torch.long),
        "top_win_act": torch.zeros(f, k, w),
        "res_keys": torch.full((f, r), _I64_MAX, dtype=torch.long),
        "res_vals": torch.zeros(f, r),
        "res_tok": torch.full((f, r), -1, dtype=torch.long),
        "res_win_tok": torch.full((f, r, w), -1, dtype=torch.long),
        "res_win_act": torch.zeros(f, r, w),
    }
    if f <= cfg.max_coact:
        state["coact"] = torch.zeros(f, f, dtype=torch.float64)
    return state


def _windows(acts: Tensor, tokens: Tensor, flat_idx: Tensor, cfg: StatsConfig) -> tuple[Tensor, Tensor]:
    """Token and activation windows ``[F k W]`` around flat positions ``flat_idx [F k]`` of ``acts [B P F]``."""
    b_sz, p_sz, f_sz = acts.shape
    pad_acts = torch.nn.functional.pad(acts, (0, 0, cfg.left, cfg.right))
    pad_tok = torch.nn.functional.pad(tokens, (cfg.left, cfg.right), value=-1)
    b = (flat_idx // p_sz)[..., None]
    p = (flat_idx % p_sz)[..., None] + torch.arange(cfg.window)
    feat = torch.arange(f_sz)[:, None, None].expand_as(p)
    return pad_tok[b.expand_as(p), p], pad_acts[b.expand_as(p), p, feat]


def _merge(state: dict[str, Tensor], prefix: str, order: Tensor, cand: dict[str, Tensor]) -> None:
    """Keep entries ``order [F k]`` of the concatenation of the state's ``prefix`` tensors and ``cand``."""
    for name, new in cand.items():
        both = torch.cat([state[prefix + name], new], dim=1)
        idx = order.view(*order.shape, *([1] * (both.dim() - 2))).expand(*order.shape, *both.shape[2:])
        state[prefix + name] = both.gather(1, idx)


@torch.no_grad()
def update(state: dict[str, Tensor], acts: Float[Tensor, "b p f"], tokens: Int[Tensor, "b p"],
           keep: Bool[Tensor, "b p"], first_token: int, cfg: StatsConfig) -> None:
    """Fold one batch of feature activations into ``state`` (in place).

    ``first_token`` is the global index of ``tokens[0, 0]``; batches hold whole sequences of equal length.
    """
    b_sz, p_sz, f_sz = acts.shape
    acts = acts.float()
    flat = acts.reshape(-1, f_sz)
    kept = keep.reshape(-1)
    fired = (flat > 0) & kept[:, None]
    state["n_tokens"] += int(kept.sum())
    state["n_fired"] += fired.sum(0)
    state["act_sum"] += (flat * kept[:, None]).sum(0, dtype=torch.float64)
    # histogram of positive activations, one bincount
    rows, cols = fired.nonzero(as_tuple=True)
    vals = flat[rows, cols].double()
    bins = (torch.bucketize(vals, cfg.edges()[1:-1], right=True))
    state["hist"] += torch.bincount(cols * cfg.n_bins + bins, minlength=f_sz * cfg.n_bins).view(f_sz, cfg.n_bins)
    if "coact" in state:
        a = fired.float()
        state["coact"] += (a.T @ a).double()
    k = min(cfg.top_k, flat.shape[0])
    masked = flat.masked_fill(~kept[:, None], float("-inf"))
    top_v, top_i = masked.topk(k, dim=0)  # [k F]
    top_i = top_i.T.contiguous()
    win_tok, win_act = _windows(acts, tokens, top_i, cfg)
    cand = {"vals": top_v.T, "tok": top_i + first_token, "win_tok": win_tok, "win_act": win_act}
    order = torch.cat([state["top_vals"], cand["vals"]], dim=1).topk(cfg.top_k, dim=1).indices
    _merge(state, "top_", order, cand)
    # bottom-k sampling of positive activations
    token_index = torch.arange(flat.shape[0]) + first_token
    keys = sample_keys(token_index, f_sz, cfg.seed).masked_fill(~fired, _I64_MAX)
    r = min(cfg.reservoir, flat.shape[0])
    res_k, res_i = keys.topk(r, dim=0, largest=False)
    res_i = res_i.T.contiguous()
    win_tok, win_act = _windows(acts, tokens, res_i, cfg)
    res_k = res_k.T
    cand = {"keys": res_k, "vals": flat.T.gather(1, res_i),
            "tok": torch.where(res_k == _I64_MAX, -1, res_i + first_token), "win_tok": win_tok,
            "win_act": win_act}
    order = torch.cat([state["res_keys"], res_k], dim=1).topk(cfg.reservoir, dim=1, largest=False).indices
    _merge(state, "res_", order, cand)


def quantile_groups(vals: Float[Tensor, "f r"], valid: Bool[Tensor, "f r"], n_quantiles: int) -> Int[Tensor, "f r"]:
    """Quantile group (0 = lowest) of each valid sample among its feature's valid samples; -1 where invalid."""
    rank_key = vals.masked_fill(~valid, float("inf"))
    order = rank_key.argsort(dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(vals.shape[1]).expand_as(order).contiguous())
    n_valid = valid.sum(1, keepdim=True).clamp_min(1)
    groups = (ranks * n_quantiles) // n_valid
    return groups.masked_fill(~valid, -1)


def summary(state: dict[str, Tensor]) -> dict[str, Any]:
    """Density and mean activation per feature (plain tensors)."""
    n = max(int(state["n_tokens"]), 1)
    return {"density": state["n_fired"].double() / n, "mean_act": state["act_sum"] / n}


__all__ = ["StatsConfig", "new_state", "update", "sample_keys", "quantile_groups", "summary"]
