"""ReLU dictionary with an L1 penalty weighted by decoder norms (Bricken et al. 2023; Anthropic, April 2024).

``acts = relu(pre)`` and the penalty is ``l1_coefficient * sum_i acts_i * ||W_dec[i]||`` averaged over
tokens. Weighting by the decoder norm removes the cheat of shrinking activations while growing the
decoder, so the decoder need not be constrained to unit norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mechscope.dictionaries.base import Dictionary, DictionaryConfig, TrainContext
from mechscope.dictionaries.registry import register
from mechscope.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class ReLUConfig(DictionaryConfig):
    """A ReLU + L1 sparse autoencoder."""

    architecture = "relu"

    l1_coefficient: float = 1.0
    """Weight of the decoder-norm-weighted L1 penalty (before warm-up scaling)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.l1_coefficient) and self.l1_coefficient >= 0):
            raise ConfigError(f"l1_coefficient must be finite and >= 0, got {self.l1_coefficient!r}")


def weighted_l1(acts: Tensor, dec_norms: Tensor) -> Tensor:
    """Mean over tokens of ``sum_i acts_i * dec_norms_i`` as one matrix-vector product (no temporary)."""
    flat = acts.reshape(-1, acts.shape[-1])
    return (flat @ dec_norms).sum() / max(flat.shape[0], 1)


@register
class ReLUDictionary(Dictionary):
    """``acts = relu(x_c @ W_enc + b_enc)``; see the module docstring."""

    config_class = ReLUConfig
    cfg: ReLUConfig

    def activate(self, pre: Tensor) -> Tensor:
        return torch.relu(pre)

    def sparsity_loss(self, acts: Tensor, pre: Tensor, ctx: TrainContext) -> Tensor:
        coef = self.cfg.l1_coefficient * ctx.sparsity_scale
        return coef * weighted_l1(acts, self.decoder_norms())


__all__ = ["ReLUConfig", "ReLUDictionary", "weighted_l1"]
