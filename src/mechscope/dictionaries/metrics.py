"""Reconstruction statistics of a dictionary computed from tensors (no model needed).

``l0`` (active latents per token), ``mse`` (squared error summed over features, mean over tokens),
``fvu`` (fraction of variance unexplained: total squared error over total variance around the batch
mean; ``1 - fvu`` is the explained variance), firing densities with dead (never fired) and dense
(firing on more than ``dense_threshold`` of tokens) fractions, and ``mean_max_cosine`` against known
ground-truth features. Model-dependent evaluations (CE loss recovered, KL) live in ``evals``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from mechscope.dictionaries.base import Dictionary


def l0(acts: Float[Tensor, "... d_sae"]) -> float:
    """Mean number of non-zero latents per token."""
    return float((acts != 0).sum(-1).float().mean())


def mse(recons: Tensor, target: Tensor) -> float:
    """Squared error summed over the last dim, averaged over tokens."""
    return float((recons - target).pow(2).sum(-1).mean())


def fvu(recons: Tensor, target: Tensor) -> float:
    """Fraction of variance unexplained: ``sum ||target - recons||^2 / sum ||target - mean||^2``."""
    t = target.reshape(-1, target.shape[-1]).double()
    r = recons.reshape(-1, recons.shape[-1]).double()
    return float((t - r).pow(2).sum() / (t - t.mean(0)).pow(2).sum().clamp_min(1e-30))


def firing_density(acts: Float[Tensor, "... d_sae"]) -> Float[Tensor, " d_sae"]:
    """Fraction of tokens on which each latent is non-zero."""
    flat = acts.reshape(-1, acts.shape[-1])
    return (flat != 0).float().mean(0)


def dead_fraction(density: Tensor) -> float:
    """Fraction of latents that never fired."""
    return float((density == 0).float().mean())


def dense_fraction(density: Tensor, threshold: float = 0.1) -> float:
    """Fraction of latents firing on more than ``threshold`` of tokens."""
    return float((density > threshold).float().mean())


def mean_max_cosine(learned: Float[Tensor, "n_learned d"], true: Float[Tensor, "n_true d"]) -> float:
    """For each true feature, the best cosine similarity with any learned direction; averaged."""
    a = learned / learned.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b = true / true.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return float((b.double() @ a.double().t()).max(dim=1).values.mean())


class ReconstructionStats(NamedTuple):
    """Streaming reconstruction statistics of a dictionary over some batches."""

    l0: float
    """Mean active latents per token."""
    mse: float
    """Squared error summed over features, mean over tokens (input units)."""
    fvu: float
    """Fraction of variance unexplained."""
    dead_fraction: float
    """Latents that never fired on these tokens."""
    dense_fraction: float
    """Latents firing on more than ``dense_threshold`` of tokens."""
    density: Tensor
    """``[d_sae]`` firing density (for a histogram)."""
    n_tokens: int
    """Tokens seen."""


@torch.inference_mode()
def reconstruction_stats(dictionary: Dictionary, batches: Iterable[Tensor | tuple[Tensor, Tensor]],
                         dense_threshold: float = 0.1) -> ReconstructionStats:
    """Accumulate L0/MSE/FVU/densities over ``batches`` of inputs (or ``(input, target)`` pairs)."""
    n = 0
    sq_err = 0.0
    fired: Tensor | None = None
    t_sum: Tensor | None = None
    t_sq = 0.0
    for batch in batches:
        x, target = batch if isinstance(batch, tuple) else (batch, batch)
        out = dictionary(x)
        t = target.reshape(x.shape[0], -1).double()
        sq_err += float((t - out.recons.reshape(x.shape[0], -1).double()).pow(2).sum())
        t_sum = t.sum(0) if t_sum is None else t_sum + t.sum(0)
        t_sq += float(t.pow(2).sum())
        f = (out.acts.reshape(x.shape[0], -1) != 0).sum(0)
        fired = f if fired is None else fired + f
        n += x.shape[0]
    if n == 0 or fired is None or t_sum is None:
        raise ValueError("reconstruction_stats needs at least one non-empty batch")
    total_var = t_sq - float(t_sum.pow(2).sum()) / n
    density = fired.double() / n
    return ReconstructionStats(
        l0=float(fired.sum()) / n, mse=sq_err / n, fvu=sq_err / max(total_var, 1e-30),
        dead_fraction=dead_fraction(density), dense_fraction=dense_fraction(density, dense_threshold),
        density=density.float(), n_tokens=n,
    )


__all__ = ["l0", "mse", "fvu", "firing_density", "dead_fraction", "dense_fraction", "mean_max_cosine",
           "ReconstructionStats", "reconstruction_stats"]
