"""``HookPoint``: an identity module with a name, where user functions can read or replace a tensor.

A hook function is ``fn(tensor, hook) -> tensor | None``; returning ``None`` keeps the tensor. Forward
functions run in registration order during the forward pass. Backward functions are attached to the
tensor with ``Tensor.register_hook`` when it requires grad, and receive (and may replace) its gradient.

Hook points keep plain Python lists instead of torch's module-hook dicts: a model can ask
``hook.has_hooks`` cheaply and skip computing an activation nobody asked for (``attn.hook_result``,
per-head inputs, the explicit attention pattern).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

HookFn = Callable[[Tensor, "HookPoint"], Tensor | None]


class HookPoint(nn.Module):
    """Identity module named by its root model; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str = ""
        self.fwd_fns: list[HookFn] = []
        self.bwd_fns: list[HookFn] = []

    @property
    def has_hooks(self) -> bool:
        """True when any forward or backward function is attached."""
        return bool(self.fwd_fns) or bool(self.bwd_fns)

    def forward(self, x: Tensor) -> Tensor:
        for fn in self.fwd_fns:
            out = fn(x, self)
            if out is not None:
                x = out
        if self.bwd_fns and x.requires_grad:
            fns = list(self.bwd_fns)

            def _bwd(grad: Tensor) -> Tensor:
                for fn in fns:
                    out = fn(grad, self)
                    if out is not None:
                        grad = out
                return grad

            x.register_hook(_bwd)
        return x

    def __call__(self, x: Tensor) -> Tensor:  # skip nn.Module dispatch: hook points sit on the hot path
        if not self.fwd_fns and not self.bwd_fns:
            return x
        return self.forward(x)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, fwd={len(self.fwd_fns)}, bwd={len(self.bwd_fns)}"


def is_hook_point(m: object) -> bool:
    """Whether ``m`` is a hook point (helper for filters)."""
    return isinstance(m, HookPoint)


__all__ = ["HookPoint", "HookFn", "is_hook_point"]
