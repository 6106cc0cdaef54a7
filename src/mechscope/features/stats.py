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


def pair_keys(token_index: Int[Tensor, " n"], feature: Int[Tensor, " n"], seed: int) -> Int[Tensor, " n"]:
    """Deterministic pseudo-random non-negative keys of (token, feature) pairs (splitmix-style mixing)."""
    x = ((token_index.long() * _M1) ^ (feature.long() * _M2)) + seed
    x = x ^ (x >> 31)
    x = x * _M3
    x = x ^ (x >> 29)
    return x & _I64_MAX


def sample_keys(token_index: Int[Tensor, " n"], n_features: int, seed: int) -> Int[Tensor, "n f"]:
    """:func:`pair_keys` of every (token, feature) pair ``[n F]``."""
    t = token_index.long()[:, None].expand(-1, n_features)
    f = torch.arange(n_features, dtype=torch.long)[None, :].expand(token_index.shape[0], -1)
    return pair_keys(t.reshape(-1), f.reshape(-1), seed).view(token_index.shape[0], n_features)


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
        state["coact"] = torch.zeros(f, f, dtype=torch.long)
    return state


def _windows(acts: Tensor, tokens: Tensor, flat_idx: Tensor, feat: Tensor, cfg: StatsConfig) -> tuple[Tensor, Tensor]:
    """Token and activation windows ``[n W]`` of feature ``feat [n]`` around flat positions ``flat_idx [n]``."""
    p_sz = acts.shape[1]
    pad_acts = torch.nn.functional.pad(acts, (0, 0, cfg.left, cfg.right))
    pad_tok = torch.nn.functional.pad(tokens, (cfg.left, cfg.right), value=-1)
    b = (flat_idx // p_sz)[:, None]
    p = (flat_idx % p_sz)[:, None] + torch.arange(cfg.window)
    return pad_tok[b, p], pad_acts[b, p, feat[:, None]]


def _merge(state: dict[str, Tensor], prefix: str, order: Tensor, cand: dict[str, Tensor], flat_idx: Tensor,
           acts: Tensor, tokens: Tensor, cfg: StatsConfig) -> None:
    """Keep entries ``order [F K]`` of [the state's ``prefix`` entries | the batch's candidates ``cand``].

    Windows are gathered only for the candidates that survive the merge (after the first batches, few do).
    """
    k_old = state[prefix + "vals"].shape[1]
    for name, new in cand.items():
        state[prefix + name] = torch.cat([state[prefix + name], new], dim=1).gather(1, order)
    from_old = order.clamp(max=k_old - 1)
    for name in ("win_tok", "win_act"):
        old = state[prefix + name]
        state[prefix + name] = old.gather(1, from_old[..., None].expand(-1, -1, old.shape[2]))
    f_idx, slot = ((order >= k_old) & (state[prefix + "tok"] >= 0)).nonzero(as_tuple=True)
    if f_idx.numel():
        j = order[f_idx, slot] - k_old
        win_tok, win_act = _windows(acts, tokens, flat_idx[f_idx, j], f_idx, cfg)
        state[prefix + "win_tok"][f_idx, slot] = win_tok
        state[prefix + "win_act"][f_idx, slot] = win_act


def _add_coact(coact: Tensor, fired: Tensor, rows: Tensor, cols: Tensor) -> None:
    """Add the ``[F F]`` counts of tokens on which both features fired: pair counting when sparse, a matmul
    when dense."""
    n, f = fired.shape
    counts = fired.sum(1)
    n_pairs = int((counts * counts).sum())
    if n_pairs * 128 > n * f * f:  # dense (neurons): one matmul, exact in float32 (counts <= n < 2**24)
        a = fired.float()
        coact += (a.T @ a).long()
        return
    starts = counts.cumsum(0) - counts  # nonzeros are ordered by row
    per = counts[rows]  # each nonzero pairs with every nonzero of its row
    first = torch.repeat_interleave(torch.arange(rows.shape[0]), per)
    offset = torch.arange(first.shape[0]) - torch.repeat_interleave(per.cumsum(0) - per, per)
    second = starts[rows[first]] + offset
    coact.view(-1).scatter_add_(0, cols[first] * f + cols[second], torch.ones_like(first))


def _best_per_feature(cols: Tensor, score: Tensor, n: int, n_features: int, largest: bool) -> tuple[Tensor, ...]:
    """For entries ``(cols, score)``, the ``n`` best per feature: ``(feature, rank, entry index)`` of each kept one."""
    by_score = torch.argsort(score, descending=largest, stable=True)
    idx = by_score[torch.argsort(cols[by_score], stable=True)]  # by feature, then by score
    c = cols[idx]
    counts = torch.bincount(cols, minlength=n_features)
    rank = torch.arange(idx.shape[0]) - (counts.cumsum(0) - counts)[c]
    sel = rank < n
    return c[sel], rank[sel], idx[sel]


def _candidates(n_features: int, n: int, c: Tensor, rank: Tensor, fill: float | int, values: Tensor,
                flat_pos: Tensor) -> tuple[Tensor, Tensor]:
    """Dense ``[F n]`` candidate values (``fill`` where a feature has fewer) and their flat positions (-1)."""
    dtype = values.dtype
    vals = torch.full((n_features, n), fill, dtype=dtype)
    pos = torch.full((n_features, n), -1, dtype=torch.long)
    vals[c, rank] = values
    pos[c, rank] = flat_pos
    return vals, pos


@torch.no_grad()
def update(state: dict[str, Tensor], acts: Float[Tensor, "b p f"], tokens: Int[Tensor, "b p"],
           keep: Bool[Tensor, "b p"], first_token: int, cfg: StatsConfig) -> None:
    """Fold one batch of feature activations into ``state`` (in place).

    ``first_token`` is the global index of ``tokens[0, 0]``; batches hold whole sequences of equal length.
    Work beyond the dense sums is proportional to the number of (token, feature) pairs that fired.
    """
    b_sz, p_sz, f_sz = acts.shape
    acts = acts.float()
    flat = acts.reshape(-1, f_sz)
    kept = keep.reshape(-1)
    fired = (flat > 0) & kept[:, None]
    state["n_tokens"] += int(kept.sum())
    state["n_fired"] += fired.sum(0)
    state["act_sum"] += (flat * kept[:, None]).sum(0, dtype=torch.float64)
    rows, cols = fired.nonzero(as_tuple=True)
    vals = flat[rows, cols]
    # histogram of positive activations, one bincount
    bins = torch.bucketize(vals.double(), cfg.edges()[1:-1], right=True)
    state["hist"] += torch.bincount(cols * cfg.n_bins + bins, minlength=f_sz * cfg.n_bins).view(f_sz, cfg.n_bins)
    if "coact" in state:
        _add_coact(state["coact"], fired, rows, cols)
    flat_pos = rows  # row index of the flattened batch = b * p_sz + p
    # top-k: each feature's k best positive activations of the batch, merged with the kept ones
    c, rank, idx = _best_per_feature(cols, vals, cfg.top_k, f_sz, largest=True)
    top_v, top_i = _candidates(f_sz, cfg.top_k, c, rank, float("-inf"), vals[idx], flat_pos[idx])
    order = torch.cat([state["top_vals"], top_v], dim=1).topk(cfg.top_k, dim=1).indices
    cand = {"vals": top_v, "tok": torch.where(top_i >= 0, top_i + first_token, -1)}
    _merge(state, "top_", order, cand, top_i, acts, tokens, cfg)
    # bottom-k sampling of positive activations: a hash key per fired (token, feature), keep the smallest
    keys = pair_keys(rows + first_token, cols, cfg.seed)
    c, rank, idx = _best_per_feature(cols, keys, cfg.reservoir, f_sz, largest=False)
    res_k, res_i = _candidates(f_sz, cfg.reservoir, c, rank, _I64_MAX, keys[idx], flat_pos[idx])
    res_v = torch.zeros(f_sz, cfg.reservoir)
    res_v[c, rank] = vals[idx]
    order = torch.cat([state["res_keys"], res_k], dim=1).topk(cfg.reservoir, dim=1, largest=False).indices
    cand = {"keys": res_k, "vals": res_v, "tok": torch.where(res_i >= 0, res_i + first_token, -1)}
    _merge(state, "res_", order, cand, res_i, acts, tokens, cfg)


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


__all__ = ["StatsConfig", "new_state", "update", "sample_keys", "pair_keys", "quantile_groups", "summary"]
