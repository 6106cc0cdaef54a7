"""LayerNorm and RMSNorm with ``hook_scale`` [batch pos 1] and ``hook_normalized`` [batch pos d_model].

``normalize(x)`` applies the same norm without firing hooks; attention uses it for per-head inputs
(``hook_q_input`` etc.), so that patching a per-head input recomputes that head's norm scale.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mechscope.hooks.point import HookPoint
from mechscope.models.config import NormConfig


class LayerNorm(nn.Module):
    """(x - mean) / sqrt(var + eps) * w + b."""

    def __init__(self, d_model: int, cfg: NormConfig) -> None:
        super().__init__()
        self.eps = cfg.eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model)) if cfg.bias else None
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def _scale(self, x: Tensor) -> Tensor:
        return (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()

    def _affine(self, x: Tensor) -> Tensor:
        x = x * self.w
        return x + self.b if self.b is not None else x

    def forward(self, x: Tensor) -> Tensor:
        if not (self.hook_scale.has_hooks or self.hook_normalized.has_hooks):
            return nn.functional.layer_norm(x, x.shape[-1:], self.w, self.b, self.eps)
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale(self._scale(x))
        return self._affine(self.hook_normalized(x / scale))

    def normalize(self, x: Tensor) -> Tensor:
        """The norm without hooks (any leading shape)."""
        return nn.functional.layer_norm(x, x.shape[-1:], self.w, self.b, self.eps)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) * w (Llama family)."""

    def __init__(self, d_model: int, cfg: NormConfig) -> None:
        super().__init__()
        self.eps = cfg.eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        if not (self.hook_scale.has_hooks or self.hook_normalized.has_hooks):
            return self.normalize(x)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.w

    def normalize(self, x: Tensor) -> Tensor:
        """The norm without hooks (any leading shape).

        float32: the same operations in the same order as transformers' ``LlamaRMSNorm`` (the same bits);
        outside autograd x² and the output share one buffer and the weight multiplies in place. Lower
        precision outside autograd: the mean square accumulates in float32 in one reduction (x² is not
        rounded first). Multiplying by the float32 inverse with one rounding, as transformers does after
        upcasting, measured 40% slower per norm (a mixed-dtype kernel plus a copy), so the inverse is
        rounded to the input dtype first.
        """
        if torch.is_grad_enabled() and (x.requires_grad or self.w.requires_grad):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.w
        if x.dtype in (torch.float16, torch.bfloat16):  # float64 takes the exact path below
            norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32)
            inv = norm.square_().div_(x.shape[-1]).add_(self.eps).rsqrt_().to(x.dtype)
            return torch.mul(x, inv).mul_(self.w)
        buf = torch.mul(x, x)
        inv = buf.mean(-1, keepdim=True).add_(self.eps).rsqrt_()
        return torch.mul(x, inv, out=buf).mul_(self.w)


class Identity(nn.Module):
    """No normalisation (toy models); has no hook points."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def normalize(self, x: Tensor) -> Tensor:
        """Identity."""
        return x


def make_norm(d_model: int, cfg: NormConfig) -> nn.Module:
    """The norm module for a config kind."""
    if cfg.kind == "layernorm":
        return LayerNorm(d_model, cfg)
    if cfg.kind == "rmsnorm":
        return RMSNorm(d_model, cfg)
    return Identity()
