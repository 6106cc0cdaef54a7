"""Modular addition ``a + b mod p`` as a 3-token sequence ``a b =`` (Nanda et al. 2023, "Progress
measures for grokking via mechanistic interpretability").

Tokens ``0..p-1`` are the numbers and token ``p`` is ``=``; the model reads the answer at the ``=``
position from ``p`` output logits. All ``p²`` pairs are enumerated in the order ``index = a * p + b``
(so a tensor over pairs reshapes to ``[a, b]``), and a seeded permutation splits them into train/test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from mechscope.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class ModularConfig:
    """Which modular-addition dataset to build."""

    p: int = 113
    """The modulus (need not be prime for the data; the Fourier analysis works for any p >= 3)."""
    train_frac: float = 0.3
    """Fraction of the p² pairs used for training (the rest is the test set)."""
    seed: int = 0
    """Seed of the train/test split."""

    def __post_init__(self) -> None:
        if not isinstance(self.p, int) or self.p < 3:
            raise ConfigError(f"p must be an int >= 3, got {self.p!r}")
        if not 0 < self.train_frac < 1:
            raise ConfigError(f"train_frac must be in (0, 1), got {self.train_frac}")
        n_train = round(self.train_frac * self.p**2)
        if not 0 < n_train < self.p**2:
            raise ConfigError(f"train_frac={self.train_frac} leaves an empty train or test set for p={self.p}")


class ModularData(NamedTuple):
    """All pairs of one modular-addition task and its split."""

    tokens: Tensor
    """[p² 3] int64 rows ``(a, b, p)`` in order ``a * p + b``."""
    labels: Tensor
    """[p²] int64 ``(a + b) % p``."""
    train_idx: Tensor
    """[n_train] indices into the p² pairs."""
    test_idx: Tensor
    """[p² - n_train] the other indices."""
    p: int
    """The modulus."""


def all_pairs(p: int) -> tuple[Tensor, Tensor]:
    """Tokens [p² 3] ``(a, b, =)`` and labels [p²] ``(a+b) % p``, in order ``a * p + b``."""
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    return tokens, (a + b) % p


def make_modular_data(cfg: ModularConfig) -> ModularData:
    """Enumerate all pairs and split them with a permutation seeded by ``cfg.seed``.

    Example:
        >>> d = make_modular_data(ModularConfig(p=5, train_frac=0.4, seed=0))
        >>> d.tokens.shape, d.train_idx.numel(), d.test_idx.numel(), int(d.labels[4 * 5 + 3])
        (torch.Size([25, 3]), 10, 15, 2)
    """
    tokens, labels = all_pairs(cfg.p)
    gen = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(cfg.p**2, generator=gen)
    n_train = round(cfg.train_frac * cfg.p**2)
    return ModularData(tokens, labels, perm[:n_train].sort().values, perm[n_train:].sort().values, cfg.p)
