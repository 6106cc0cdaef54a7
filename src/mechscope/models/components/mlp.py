"""MLPs: ``standard`` act(x W_in + b_in) W_out + b_out, and ``gated`` act(x W_gate) * (x W_in) W_out.

Hooks follow TransformerLens: ``hook_pre`` is the pre-activation of the nonlinearity (the gate for gated
MLPs), ``hook_pre_linear`` the linear branch of a gated MLP, ``hook_post`` what multiplies ``W_out``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from mechscope.hooks.point import HookPoint
from mechscope.models.config import MLPConfig


def _gelu_new(x: Tensor) -> Tensor:
    # the tanh approximation (GPT-2's "gelu_new") as one fused kernel
    return nn.functional.gelu(x, approximate="tanh")


def _gelu_fast(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": nn.functional.gelu,
    "gelu_new": _gelu_new,
    "gelu_fast": _gelu_fast,
    "relu": torch.relu,
    "silu": nn.functional.silu,
}


class MLP(nn.Module):
    """Standard or gated MLP; see module docstring."""

    def __init__(self, d_model: int, cfg: MLPConfig) -> None:
        super().__init__()
        self.is_gated = cfg.kind == "gated"
        self.act = ACTIVATIONS[cfg.act]
        self.act_name = cfg.act
        self.W_in = nn.Parameter(torch.empty(d_model, cfg.d_mlp))
        self.W_gate = nn.Parameter(torch.empty(d_model, cfg.d_mlp)) if self.is_gated else None
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, d_model))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp)) if cfg.bias else None
        self.b_out = nn.Parameter(torch.zeros(d_model)) if cfg.bias else None
        self.hook_pre = HookPoint()
        if self.is_gated:
            self.hook_pre_linear = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        """[batch pos d_model] -> [batch pos d_model] (a new tensor the caller may modify in place)."""
        if self.W_gate is None:
            post = self.hook_post(self.act(self.hook_pre(_linear(x, self.W_in, self.b_in))))
        else:
            post = self._gated(x, self.W_gate)
        return _linear(post, self.W_out, self.b_out)

    def _gated(self, x: Tensor, w_gate: Tensor) -> Tensor:
        """act(x W_gate) * (x W_in + b_in); with no hooks and no autograd, the activation and the product
        are written in place into the gate's matmul output (one allocation and pass less each)."""
        gate, lin = x @ w_gate, _linear(x, self.W_in, self.b_in)
        if self.hook_pre.has_hooks or self.hook_pre_linear.has_hooks or _needs_grad(x, self):
            return self.hook_post(self.act(self.hook_pre(gate)) * self.hook_pre_linear(lin))
        if self.hook_post.has_hooks:
            return self.hook_post(self.act(gate) * lin)
        inplace = INPLACE_ACTIVATIONS.get(self.act_name)
        act = inplace(gate) if inplace is not None else self.act(gate)
        return act.mul_(lin)


INPLACE_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "silu": lambda t: nn.functional.silu(t, inplace=True),
    "relu": torch.relu_,
}
"""In-place versions of ``ACTIVATIONS`` (same numbers) used where no one else holds the input."""


def _needs_grad(x: Tensor, module: nn.Module) -> bool:
    """Whether autograd records this call (then nothing is modified in place)."""
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in module.parameters()))


def _linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """x @ w (+ b) with the bias fused into the matmul (addmm) when present."""
    return x @ w if b is None else nn.functional.linear(x, w.t(), b)
