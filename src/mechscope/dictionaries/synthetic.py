"""Synthetic activations with known sparse features in superposition (ground truth for dictionaries).

``n_features`` unit directions in ``d_in < n_features`` dimensions. Feature ``i`` fires with probability
``p_i`` proportional to ``(i + 1) ** -power_law_exponent`` (scaled so that on average ``mean_active``
features fire per sample), with a positive magnitude. With ``correlation > 0`` firing is correlated
within groups of ``group_size`` features through a Gaussian copula: ``z_i = sqrt(rho) g_group +
sqrt(1 - rho) e_i`` and feature ``i`` fires iff ``Phi(z_i) < p_i``, so the marginal frequencies stay
exactly ``p_i`` while features of a group tend to co-occur. A perfect dictionary recovers the feature
directions; :func:`mechscope.dictionaries.metrics.mean_max_cosine` scores how well.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from mechscope.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """Ground-truth generator settings."""

    d_in: int
    """Width of the generated activations."""
    n_features: int
    """Number of true features (superposition when > d_in)."""
    mean_active: float = 4.0
    """Expected number of firing features per sample."""
    power_law_exponent: float = 0.0
    """Feature frequency ``p_i ~ (i+1)^-exponent``; 0 gives uniform frequencies."""
    correlation: float = 0.0
    """Copula correlation ``rho`` in [0, 1) of firing within a group; 0 is independent."""
    group_size: int = 4
    """Features per correlated group."""
    magnitude_mean: float = 1.0
    """Mean magnitude of a firing feature."""
    magnitude_std: float = 0.25
    """Standard deviation of the magnitude (clamped to stay positive)."""
    noise_std: float = 0.0
    """Isotropic Gaussian noise added to every sample."""
    seed: int = 0
    """Seed of the feature directions and of the sample stream."""

    def __post_init__(self) -> None:
        if self.d_in <= 0 or self.n_features <= 0:
            raise ConfigError(f"d_in and n_features must be positive, got {self.d_in}, {self.n_features}")
        if not 0 < self.mean_active <= self.n_features:
            raise ConfigError(f"mean_active must be in (0, n_features], got {self.mean_active}")
        if not 0 <= self.correlation < 1:
            raise ConfigError(f"correlation must be in [0, 1), got {self.correlation}")
        if self.group_size <= 0 or self.power_law_exponent < 0 or self.magnitude_std < 0 or self.noise_std < 0:
            raise ConfigError("group_size must be positive; exponent, magnitude_std, noise_std non-negative")


class SyntheticBatch(NamedTuple):
    """A batch of synthetic activations with its ground truth."""

    acts: Tensor
    """``[n d_in]`` activations."""
    codes: Tensor
    """``[n n_features]`` true feature magnitudes (zero when not firing)."""


class SyntheticActivations:
    """Seeded generator of activations from known sparse features; see the module docstring."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        self.cfg = cfg
        self.gen = torch.Generator().manual_seed(cfg.seed)
        feats = torch.randn(cfg.n_features, cfg.d_in, generator=self.gen)
        self.features = feats / feats.norm(dim=-1, keepdim=True)
        w = (torch.arange(cfg.n_features, dtype=torch.float64) + 1) ** -cfg.power_law_exponent
        self.frequencies = (w / w.sum() * cfg.mean_active).clamp(max=1.0).float()
        self._z_threshold = torch.special.ndtri(self.frequencies.double()).float()

    def sample(self, n: int) -> SyntheticBatch:
        """``n`` samples with their true codes."""
        cfg = self.cfg
        if cfg.correlation > 0:
            n_groups = math.ceil(cfg.n_features / cfg.group_size)
            shared = torch.randn(n, n_groups, generator=self.gen).repeat_interleave(cfg.group_size, dim=1)
            own = torch.randn(n, cfg.n_features, generator=self.gen)
            z = math.sqrt(cfg.correlation) * shared[:, : cfg.n_features] + math.sqrt(1 - cfg.correlation) * own
            fire = z < self._z_threshold
        else:
            fire = torch.rand(n, cfg.n_features, generator=self.gen) < self.frequencies
        mags = (cfg.magnitude_mean + cfg.magnitude_std * torch.randn(n, cfg.n_features, generator=self.gen))
        codes = fire * mags.clamp_min(0.05)
        acts = codes @ self.features
        if cfg.noise_std > 0:
            acts = acts + cfg.noise_std * torch.randn(n, cfg.d_in, generator=self.gen)
        return SyntheticBatch(acts, codes)

    def batches(self, batch_size: int, n_batches: int | None = None) -> Iterator[Tensor]:
        """Activation batches ``[batch_size d_in]`` (endless when ``n_batches`` is None)."""
        i = 0
        while n_batches is None or i < n_batches:
            yield self.sample(batch_size).acts
            i += 1


__all__ = ["SyntheticConfig", "SyntheticActivations", "SyntheticBatch"]
