"""MLPs: ``standard`` act(x W_in + b_in) W_out + b_out, and ``gated`` act(x W_gate) * (x W_in) W_out.

Hooks follow TransformerLens: ``hook_pre`` is the pre-activation of the nonlinearity (the gate for gated
MLPs), ``hook_pre_linear`` the linear branch of a gated MLP, ``hook_post`` what multiplies ``W_out``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from mechscope.hooks.point import HookPoint
from mechscope.models.components.fused import FusedWeight, cat_columns
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
            self._fused_gate_up = FusedWeight(cat_columns)
        self.hook_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        """[batch pos d_model] -> [batch pos d_model] (a new tensor the caller may modify in place)."""
        if self.W_gate is None:
            post = self.hook_post(self.act(self.hook_pre(_linear(x, self.W_in, self.b_in))))
        else:
            post = self._gated(x, self.W_gate)
        return _linear(post, self.W_out, self.b_out)

    def _gated(self, x: Tensor, w_gate: Tensor) -> Tensor:
        """act(x W_gate) * (x W_in + b_in): both branches from one matmul over the fused [d_model 2·d_mlp]
        weight; with no hooks and no autograd, activation and product are written in place into it."""
        m = w_gate.shape[1]
        h = x @ self._fused_gate_up.get((w_gate, self.W_in))
        gate, lin = h[..., :m], h[..., m:]
        if m % _VECTOR_ROW:  # see _VECTOR_ROW
            gate = gate.contiguous()
        if self.b_in is not None:
            lin = lin + self.b_in
        if self.hook_pre.has_hooks or self.hook_pre_linear.has_hooks or _needs_grad(x, self):
            pre = self.hook_pre(gate.contiguous() if self.hook_pre.has_hooks else gate)
            lin = self.hook_pre_linear(lin.contiguous() if self.hook_pre_linear.has_hooks else lin)
            return self.hook_post(self.act(pre) * lin)
        if self.hook_post.has_hooks:
            return self.hook_post(self.act(gate) * lin)
        inplace = INPLACE_ACTIVATIONS.get(self.act_name)
        act = inplace(gate) if inplace is not None else self.act(gate)
        return act.mul_(lin)


_VECTOR_ROW = 64
"""Activations (exp, tanh) compute a row's last ``len % vector width`` elements with scalar code, whose
roundings differ from the vectorised code's. Applied to the strided gate view (rows of d_mlp), that
would change a few bits compared with the contiguous gate that hooks and transformers see, unless d_mlp
is a multiple of every vector loop width (64 covers AVX-512 float32 and bfloat16); otherwise the gate is
made contiguous first."""


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
