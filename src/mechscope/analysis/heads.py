"""Attention-head detectors: which heads attend where a known mechanism would (any model).

A detector is a *target* attention pattern [batch query_pos key_pos] with weights in [0, 1] built from the
tokens alone; a head's score is the attention mass it puts on the target keys, averaged over the queries
that have any target. Built-in targets:

* **previous-token**: query q → key q−1;
* **duplicate-token**: query q → every earlier key holding the same token;
* **induction**: query q → every key k whose *previous* token equals the token at q (the token after an
  earlier copy of the current one; Olsson et al. 2022). On a random sequence repeated twice this is
  q → q−L+1 in the second half, where any match must come from in-context copying.

Custom detectors are any such target tensor (:func:`pattern_scores`). Scores for all layers and heads
come from one forward pass and one batched contraction (no loops over heads). :func:`uniform_baseline`
gives the score of a head attending uniformly over the causal prefix — "chance".
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechscope.errors import ConfigError, ShapeError


class HeadScores(NamedTuple):
    """Detector scores [n_layers n_heads] of every head, plus chance levels for the same tokens."""

    previous_token: Float[Tensor, "n_layers n_heads"]
    """Mean attention to the previous token."""
    duplicate_token: Float[Tensor, "n_layers n_heads"]
    """Mean attention to earlier copies of the current token."""
    induction: Float[Tensor, "n_layers n_heads"]
    """Mean attention to the tokens after earlier copies of the current token."""
    chance: dict[str, float]
    """Each detector's score under uniform causal attention, for comparison."""


def repeated_tokens(d_vocab: int, half_len: int, batch: int = 4, seed: int = 0, bos: int | None = None,
                    low: int = 0, high: int | None = None) -> Int[Tensor, "batch pos"]:
    """``batch`` random sequences of ``half_len`` tokens from [low, high or d_vocab), each repeated twice.

    With ``bos`` given, it is prepended (length 1 + 2·half_len). Tokens within a half are distinct when
    the vocabulary allows it, so the induction target is exactly q → q−half_len+1.
    """
    high = d_vocab if high is None else high
    if not 0 <= low < high <= d_vocab:
        raise ConfigError(f"need 0 <= low < high <= d_vocab={d_vocab}, got low={low}, high={high}")
    gen = torch.Generator().manual_seed(seed)
    n = high - low
    if half_len <= n:
        half = torch.rand(batch, n, generator=gen).argsort(-1)[:, :half_len] + low
    else:
        half = torch.randint(low, high, (batch, half_len), generator=gen)
    seq = torch.cat([half, half], dim=1)
    if bos is not None:
        seq = torch.cat([torch.full((batch, 1), bos, dtype=seq.dtype), seq], dim=1)
    return seq.long()


def _causal(p: int, device: torch.device) -> Tensor:
    return torch.ones(p, p, dtype=torch.bool, device=device).tril()


def previous_token_target(tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch query_pos key_pos"]:
    """1 at (q, q−1) for q ≥ 1."""
    b, p = tokens.shape
    t = torch.diag_embed(torch.ones(p - 1), offset=-1)
    return t.expand(b, p, p).clone()


def duplicate_token_target(tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch query_pos key_pos"]:
    """1 at (q, k) for k < q with tokens[k] == tokens[q]."""
    p = tokens.shape[1]
    same = tokens[:, :, None] == tokens[:, None, :]
    strictly_before = _causal(p, tokens.device).logical_and(~torch.eye(p, dtype=torch.bool, device=tokens.device))
    return (same & strictly_before).float()


def induction_target(tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch query_pos key_pos"]:
    """1 at (q, k) for 1 ≤ k < q with tokens[k−1] == tokens[q]."""
    b, p = tokens.shape
    prev = torch.cat([torch.full((b, 1), -1, dtype=tokens.dtype, device=tokens.device), tokens[:, :-1]], dim=1)
    match = tokens[:, :, None] == prev[:, None, :]
    strictly_before = torch.ones(p, p, dtype=torch.bool, device=tokens.device).tril(-1)
    return (match & strictly_before).float()


def pattern_scores(patterns: Float[Tensor, "n_layers batch n_heads query_pos key_pos"],
                   target: Float[Tensor, "batch query_pos key_pos"]) -> Float[Tensor, "n_layers n_heads"]:
    """Attention mass on ``target`` keys, averaged over (batch, query) rows where the target has any weight.

    ``target`` may also be [query_pos key_pos] (the same for every sequence). Returns NaN if no row has a target.
    """
    if target.dim() == 2:
        target = target.expand(patterns.shape[1], -1, -1)
    if target.shape != (patterns.shape[1], *patterns.shape[3:]):
        raise ShapeError(f"target: expected shape {(patterns.shape[1], *patterns.shape[3:])} "
                         f"(batch query_pos key_pos) matching the patterns, got {tuple(target.shape)}")
    target = target.to(patterns.dtype)
    rows = (target.sum(-1) > 0).to(patterns.dtype)  # [b q]
    mass = torch.einsum("lbhqk,bqk->lbhq", patterns, target)
    return torch.einsum("lbhq,bq->lh", mass, rows) / rows.sum()


def uniform_baseline(target: Float[Tensor, "batch query_pos key_pos"]) -> float:
    """The score of a head attending uniformly to positions 0..q (chance level for this target)."""
    p = target.shape[-1]
    uniform = _causal(p, target.device).float() / torch.arange(1, p + 1, device=target.device)[:, None]
    return float(pattern_scores(uniform.expand(target.shape[0], 1, p, p)[None].contiguous(), target)[0, 0])


@torch.inference_mode()
def attention_patterns(model: Any, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "n_layers batch n_heads q k"]:
    """Every layer's attention pattern from one forward pass (the pattern hooks only, nothing else cached)."""
    _, cache = model.run_with_cache(tokens, names=lambda name: name.endswith("attn.hook_pattern"))
    return torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(model.cfg.n_layers)]).float()


def detector_targets(tokens: Int[Tensor, "batch pos"], *, skip_first: bool = True
                     ) -> dict[str, Float[Tensor, "batch query_pos key_pos"]]:
    """The built-in targets (``previous_token``, ``duplicate_token``, ``induction``) ``detect_heads`` scores;
    ``skip_first`` takes key 0 out of each (see ``detect_heads``)."""
    targets = {"previous_token": previous_token_target(tokens), "duplicate_token": duplicate_token_target(tokens),
               "induction": induction_target(tokens)}
    if skip_first and tokens.shape[1] > 1:
        for t in targets.values():
            t[:, :, 0] = 0.0
    return targets


def detect_heads(model: Any, tokens: Int[Tensor, "batch pos"] | None = None, *, half_len: int = 50,
                 batch: int = 4, seed: int = 0, skip_first: bool = True,
                 token_range: tuple[int, int] | None = None) -> HeadScores:
    """Previous-token, duplicate-token and induction scores of every head of ``model``.

    Default tokens: ``batch`` random sequences of ``half_len`` tokens repeated twice (with the tokenizer's
    BOS, if the model has one, first). Pass ``tokens`` to score on real text instead. ``skip_first``
    takes key 0 (the BOS / first token, a common attention sink) out of every target. ``token_range``
    = (low, high) restricts the random tokens (e.g. printable bytes for a byte-level model).
    """
    if tokens is None:
        tok = getattr(model, "tokenizer", None)
        bos = getattr(tok, "bos_token_id", None) if tok is not None else None
        low = min(3, model.cfg.d_vocab - 1) if bos is not None else 0  # keep special ids out of the random part
        low, high = token_range if token_range is not None else (low, None)
        tokens = repeated_tokens(model.cfg.d_vocab, half_len, batch, seed, bos=bos, low=low, high=high)
    patterns = attention_patterns(model, tokens)
    targets = detector_targets(tokens, skip_first=skip_first)
    scores = {k: pattern_scores(patterns, t) for k, t in targets.items()}
    chance = {k: uniform_baseline(t) for k, t in targets.items()}
    return HeadScores(scores["previous_token"], scores["duplicate_token"], scores["induction"], chance)


def rank_heads(scores: Float[Tensor, "n_layers n_heads"], k: int = 10) -> list[list[float | int]]:
    """The ``k`` best heads as ``[[layer, head, score], ...]`` (highest first, NaNs last)."""
    flat = torch.nan_to_num(scores.float(), nan=float("-inf")).flatten()
    top = torch.topk(flat, min(k, flat.numel()))
    n_heads = scores.shape[1]
    return [[int(i) // n_heads, int(i) % n_heads, round(float(s), 4)] for i, s in zip(top.indices, top.values)]
