"""JumpReLU dictionary (Rajamanoharan et al. 2024, "Jumping Ahead"): a learned threshold per latent.

``acts = pre * H(pre - theta)`` with ``H`` the Heaviside step, trained with an L0 penalty
``l0_coefficient * sum_i H(pre_i - theta_i)``. Both are piecewise constant in ``theta``, so the paper
uses straight-through estimators whose pseudo-derivatives with respect to ``theta`` are kernel density
estimates with a rectangle kernel ``K(u) = 1{|u| < 1/2}`` of bandwidth ``eps``:

    d/d theta  [x H(x - theta)] := -(theta / eps) K((x - theta) / eps)
    d/d theta  H(x - theta)     := -(1 / eps)     K((x - theta) / eps)

while ``d/dx [x H(x - theta)] = H(x - theta)`` and the step passes no gradient to ``x``. Averaged over a
batch these estimate ``-theta p(theta)`` and ``-p(theta)``, the true derivatives of the expectations,
where ``p`` is the density of the pre-activation (tested numerically).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mechscope.dictionaries.base import (
    Dictionary,
    DictionaryConfig,
    TrainContext,
    TrainOutput,
    compute_dtype,
    squared_error,
)
from mechscope.dictionaries.registry import register
from mechscope.errors import ConfigError


def rectangle(u: Tensor) -> Tensor:
    """Rectangle kernel ``1{-1/2 < u < 1/2}``."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """``x * H(x - theta)`` with the straight-through gradient of the module docstring."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(x, theta)
        ctx.eps = eps
        return x * (x > theta).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor, None]:
        x, theta = ctx.saved_tensors
        d_x = (x > theta).to(g.dtype) * g
        d_theta = -(theta / ctx.eps) * rectangle((x - theta) / ctx.eps) * g
        return d_x, d_theta.reshape(-1, theta.shape[-1]).sum(0), None


class StepFunction(torch.autograd.Function):
    """``H(x - theta)`` with the straight-through gradient of the module docstring (none to ``x``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(x, theta)
        ctx.eps = eps
        return (x > theta).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[None, Tensor, None]:
        x, theta = ctx.saved_tensors
        d_theta = -(1.0 / ctx.eps) * rectangle((x - theta) / ctx.eps) * g
        return None, d_theta.reshape(-1, theta.shape[-1]).sum(0), None


def jumprelu(x: Tensor, theta: Tensor, eps: float) -> Tensor:
    """Differentiable JumpReLU (straight-through in ``theta``)."""
    return JumpReLUFunction.apply(x, theta, eps)


def step(x: Tensor, theta: Tensor, eps: float) -> Tensor:
    """Differentiable Heaviside step (straight-through in ``theta``)."""
    return StepFunction.apply(x, theta, eps)


class _JumpReLUCode(torch.autograd.Function):
    """Fused training step: ``(x_s, b_dec, W_enc, b_enc, W_dec, threshold) -> (acts @ W_dec, L0 sum, fired)``.

    The same straight-through estimators as ``JumpReLUFunction`` and ``StepFunction`` combined, so the
    ``[batch d_sae]`` tensors are touched a handful of times: with ``R = rectangle((pre − θ)/ε)``,
    ``dθ = −(1/ε) Σ_batch R · (θ · grad_acts + grad_l0)``; ``grad_pre = grad_acts · [pre > θ]``. Everything over
    ``[batch d_sae]`` runs in ``dtype`` (bf16 under autocast: the comparisons with θ round like the matmul);
    column sums are GEMVs and gradients come back in the parameters' dtype.
    """

    @staticmethod
    def forward(ctx: Any, x_s: Tensor, b_dec: Tensor | None, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor,
                theta: Tensor, eps: float, dtype: torch.dtype, exact_counts: bool) -> tuple[Tensor, Tensor, Tensor]:
        pdt = W_enc.dtype
        x_c = (x_s - b_dec if b_dec is not None else x_s).to(dtype)
        w_enc, w_dec, th = W_enc.to(dtype), W_dec.to(dtype), theta.to(dtype)
        pre = torch.addmm(b_enc.to(dtype), x_c, w_enc)
        acts = torch.where(pre > th, pre, pre.new_zeros(()))  # theta >= 0, so active values are > 0
        recons = (acts @ w_dec).to(pdt)
        fired = torch.count_nonzero(acts, dim=0) if exact_counts else (acts.amax(0) > 0).long()
        l0 = (fired.sum() if exact_counts else torch.count_nonzero(acts)).to(pdt)
        ctx.save_for_backward(x_c, pre, acts, w_enc, w_dec, theta)
        ctx.eps, ctx.has_b_dec = eps, b_dec is not None
        return recons, l0, fired

    @staticmethod
    def backward(ctx: Any, g_recons: Tensor, g_l0: Tensor, _g_fired: Tensor | None) -> tuple[Tensor | None, ...]:
        x_c, pre, acts, w_enc, w_dec, theta = ctx.saved_tensors
        dt, pdt, eps = w_enc.dtype, theta.dtype, ctx.eps
        g_rec = g_recons.to(dt)
        g_acts = g_rec @ w_dec.t()
        near = ((pre - theta.to(dt)).abs_() < eps / 2).to(dt)  # rectangle kernel (open interval, as ``rectangle``)
        ones = near.new_ones(1, near.shape[0])
        s_near_g = (ones @ (near * g_acts)).view(-1).to(pdt)  # column sums as GEMVs (fp32 accumulation)
        s_near = (ones @ near).view(-1).to(pdt)
        d_theta = -(theta * s_near_g + g_l0 * s_near) / eps
        torch.ops.aten.threshold_backward.grad_input(g_acts, acts, 0.0, grad_input=g_acts)  # [pre > theta]
        grad_w_dec = (acts.t() @ g_rec).to(pdt)
        grad_w_enc = (x_c.t() @ g_acts).to(pdt)
        grad_b_enc = (ones @ g_acts).view(-1).to(pdt)
        grad_b_dec = -(grad_b_enc @ w_enc.t().to(pdt)) if ctx.has_b_dec else None
        return None, grad_b_dec, grad_w_enc, grad_b_enc, grad_w_dec, d_theta, None, None, None

@dataclass(frozen=True, kw_only=True)
class JumpReLUConfig(DictionaryConfig):
    """A JumpReLU sparse autoencoder trained with an L0 penalty."""

    architecture = "jumprelu"

    l0_coefficient: float = 1.0
    """Weight of the L0 penalty (before warm-up scaling)."""
    bandwidth: float = 0.05
    """Kernel bandwidth ``eps`` of the straight-through estimators (in normalised units)."""
    init_threshold: float = 0.001
    """Initial threshold of every latent, >= 0, compared with pre-activations in normalised units (after
    ``input_scale``); ``mechscope dict train --init-threshold``. In short runs it, more than
    ``l0_coefficient``, sets the sparsity (docs/dictionaries.md)."""
    unit_norm_decoder: bool = True
    """The paper keeps decoder rows at unit norm."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("l0_coefficient", "init_threshold"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ConfigError(f"{name} must be finite and >= 0, got {getattr(self, name)!r}")
        if not (math.isfinite(self.bandwidth) and self.bandwidth > 0):
            raise ConfigError(f"bandwidth must be finite and > 0, got {self.bandwidth!r}")


@register
class JumpReLUDictionary(Dictionary):
    """``acts = pre * (pre > threshold)`` with a learned ``threshold [d_sae]``."""

    config_class = JumpReLUConfig
    cfg: JumpReLUConfig
    threshold: nn.Parameter

    def _init_encoder_bias(self) -> None:
        super()._init_encoder_bias()
        cfg = self.cfg
        assert isinstance(cfg, JumpReLUConfig)
        self.threshold = nn.Parameter(torch.full((cfg.d_sae,), cfg.init_threshold, dtype=cfg.torch_dtype))

    def activate(self, pre: Tensor) -> Tensor:
        """``pre * (pre > max(threshold, 0))``: a negative threshold never passes negative values (as SAELens)."""
        return pre * (pre > self.threshold.clamp_min(0)).to(pre.dtype)

    def train_activate(self, pre: Tensor, ctx: TrainContext) -> Tensor:
        return jumprelu(pre, self.threshold, self.cfg.bandwidth)

    def sparsity_loss(self, acts: Tensor, pre: Tensor, ctx: TrainContext) -> Tensor:
        l0 = step(pre, self.threshold, self.cfg.bandwidth).sum() / max(pre.reshape(-1, pre.shape[-1]).shape[0], 1)
        return self.cfg.l0_coefficient * ctx.sparsity_scale * l0

    def training_losses(self, x: Tensor, target: Tensor, ctx: TrainContext) -> TrainOutput:
        """Fused fast path (``_JumpReLUCode``); equal up to rounding to the dense reference in ``Dictionary``."""
        x_s = self.scaled_input(x)
        target = self.scale_target(target)
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else None
        dec, l0_sum, fired = _JumpReLUCode.apply(x_s.reshape(-1, self.cfg.d_in), b_dec, self.W_enc, self.b_enc,
                                                 self.W_dec, self.threshold, self.cfg.bandwidth,
                                                 compute_dtype(self.W_enc), ctx.stats)
        recons = dec.view(*target.shape[:-1], -1) + self.b_dec
        n = max(recons.reshape(-1, recons.shape[-1]).shape[0], 1)
        mse = squared_error(recons, target)  # as the reference path
        sparsity = self.cfg.l0_coefficient * ctx.sparsity_scale * l0_sum / n
        l0 = (l0_sum / n).detach()
        return TrainOutput(mse + sparsity, mse, sparsity, mse.new_zeros(()), recons.detach(), fired, l0)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Renormalise the decoder and keep thresholds non-negative (negative ones pass negatives)."""
        super().after_optimizer_step()
        self.threshold.clamp_(min=0.0)


__all__ = ["JumpReLUConfig", "JumpReLUDictionary", "JumpReLUFunction", "StepFunction", "jumprelu", "step",
           "rectangle"]
