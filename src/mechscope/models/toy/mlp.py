"""``HookedMLP``: a small multi-layer perceptron with hook points, for toy tasks (causal abstraction, DAS).

Hook names follow the transformer grammar where it fits: ``hook_in`` (the input vector),
``blocks.L.hook_pre`` (after layer L's linear map) and ``blocks.L.hook_post`` (after its activation), and
``hook_logits``. Every activation is ``[batch d]``, so interchange interventions and probes treat it like a
residual-stream row.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from jaxtyping import Float
from torch import Tensor, nn

from mechscope.errors import ConfigError
from mechscope.hooks.module import HookedModule
from mechscope.hooks.point import HookPoint


class _Block(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()


class HookedMLP(HookedModule):
    """``d_in -> hidden[0] -> ... -> hidden[-1] -> d_out``, activation after every hidden layer."""

    def __init__(self, d_in: int, hidden: list[int], d_out: int, *, act: Literal["relu", "identity"] = "relu",
                 seed: int | None = None) -> None:
        super().__init__()
        if d_in < 1 or d_out < 1 or any(h < 1 for h in hidden):
            raise ConfigError(f"HookedMLP widths must be positive, got d_in={d_in}, hidden={hidden}, d_out={d_out}")
        if act not in ("relu", "identity"):
            raise ConfigError(f"HookedMLP act must be 'relu' or 'identity', got {act!r}")
        if seed is not None:
            torch.manual_seed(seed)
        self.dims = (d_in, *hidden, d_out)
        self.act = act
        self.hook_in = HookPoint()
        self.blocks = nn.ModuleList([_Block(a, b) for a, b in zip(self.dims[:-2], self.dims[1:-1])])
        self.unembed = nn.Linear(self.dims[-2], d_out)
        self.hook_logits = HookPoint()
        self.setup()

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def forward(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"]:
        h = self.hook_in(x)
        for blk in cast(list[_Block], self.blocks):
            h = blk.hook_pre(blk.linear(h))
            h = blk.hook_post(torch.relu(h) if self.act == "relu" else h)
        return self.hook_logits(self.unembed(h))


__all__ = ["HookedMLP"]
