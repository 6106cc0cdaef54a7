"""ReLU dictionary with an L1 penalty weighted by decoder norms (Bricken et al. 2023; Anthropic, April 2024).

``acts = relu(pre)`` and the penalty is ``l1_coefficient * sum_i acts_i * ||W_dec[i]||`` averaged over
tokens. Weighting by the decoder norm removes the cheat of shrinking activations while growing the
decoder, so the decoder need not be constrained to unit norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.dictionaries.base import (
    Dictionary,
    DictionaryConfig,
    TrainContext,
    TrainOutput,
    compute_dtype,
    squared_error,
    zero,
)
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


class _ReLUCode(torch.autograd.Function):
    """``(x_s, b_dec, W_enc, b_enc, W_dec, dec_norms) -> (acts @ W_dec, sum(acts @ dec_norms), fired)``.

    ``acts = relu((x_s - b_dec) @ W_enc + b_enc)``. A hand-written backward so the ``[batch d_sae]``
    tensors are touched as few times as possible: one matmul writes the pre-activations and ReLU runs in
    place; the backward writes ``grad_acts`` with the L1 term fused into the matmul's bias (``addmm``),
    masks it in place, and gets ``b_dec``'s encoder-side gradient from ``grad_b_enc`` without a
    ``[batch d_in]`` product. Matmuls run in ``dtype`` (bf16 under autocast), gradients come back in the
    parameters' dtype.
    """

    @staticmethod
    def forward(ctx: Any, x_s: Tensor, b_dec: Tensor | None, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor,
                dec_norms: Tensor, dtype: torch.dtype, exact_counts: bool) -> tuple[Tensor, Tensor, Tensor]:
        x_c = x_s - b_dec if b_dec is not None else x_s
        w_enc, w_dec, x_c = W_enc.to(dtype), W_dec.to(dtype), x_c.to(dtype)
        acts = torch.addmm(b_enc.to(dtype), x_c, w_enc).relu_()
        recons = (acts @ w_dec).to(W_dec.dtype)
        col = (acts.new_ones(1, acts.shape[0]) @ acts).view(-1).to(dec_norms.dtype)  # column sums as a GEMV
        l1 = col @ dec_norms
        fired = torch.count_nonzero(acts, dim=0) if exact_counts else (col > 0).long()  # acts >= 0
        ctx.save_for_backward(x_c, acts, w_enc, w_dec, dec_norms, col)
        ctx.has_b_dec = b_dec is not None
        ctx.param_dtype = W_enc.dtype
        return recons, l1, fired

    @staticmethod
    def backward(ctx: Any, g_recons: Tensor, g_l1: Tensor, _g_fired: Tensor | None) -> tuple[Tensor | None, ...]:
        x_c, acts, w_enc, w_dec, dec_norms, col = ctx.saved_tensors
        dt, pdt = acts.dtype, ctx.param_dtype
        g_rec = g_recons.to(dt)
        g_pre = torch.addmm((g_l1 * dec_norms).to(dt).expand(acts.shape[1]), g_rec, w_dec.t())
        torch.ops.aten.threshold_backward.grad_input(g_pre, acts, 0.0, grad_input=g_pre)  # ReLU bwd in place
        grad_w_dec = (acts.t() @ g_rec).to(pdt)
        grad_w_enc = (x_c.t() @ g_pre).to(pdt)
        grad_b_enc = (g_pre.new_ones(1, g_pre.shape[0]) @ g_pre).view(-1).to(pdt)
        grad_norms = g_l1 * col
        grad_b_dec = -(grad_b_enc @ w_enc.t().to(pdt)) if ctx.has_b_dec else None
        return None, grad_b_dec, grad_w_enc, grad_b_enc, grad_w_dec, grad_norms, None, None


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

    def training_losses(self, x: Tensor, target: Tensor, ctx: TrainContext) -> TrainOutput:
        """Fused fast path (``_ReLUCode``); equal up to rounding to the dense reference in ``Dictionary``."""
        if type(self).skip is not Dictionary.skip:  # a subclass with a skip term: use the reference path
            return super().training_losses(x, target, ctx)
        x_s = self.scaled_input(x)
        target = self.scale_target(target)
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else None
        dec, l1, fired = _ReLUCode.apply(x_s.reshape(-1, self.cfg.d_in), b_dec, self.W_enc, self.b_enc,
                                         self.W_dec, self.decoder_norms(), compute_dtype(self.W_enc), ctx.stats)
        recons = dec.view(*target.shape[:-1], -1) + self.b_dec
        n = max(recons.reshape(-1, recons.shape[-1]).shape[0], 1)
        mse = squared_error(recons, target)  # as the reference path
        sparsity = self.cfg.l1_coefficient * ctx.sparsity_scale * l1 / n
        l0 = fired.sum() / n if ctx.stats else torch.tensor(math.nan)
        return TrainOutput(mse + sparsity, mse, sparsity, zero(mse), recons.detach(), fired, l0)


__all__ = ["ReLUConfig", "ReLUDictionary", "weighted_l1"]
