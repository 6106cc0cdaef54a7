"""Token embedding ``W_E`` [d_vocab d_model], learned positions ``W_pos`` [n_ctx d_model], unembedding ``W_U``."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor, nn


class Embed(nn.Module):
    """tokens [batch pos] -> [batch pos d_model]."""

    def __init__(self, d_vocab: int, d_model: int) -> None:
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(d_vocab, d_model))

    def forward(self, tokens: Tensor) -> Tensor:
        return nn.functional.embedding(tokens, self.W_E)


class PosEmbed(nn.Module):
    """positions [batch pos] -> [batch pos d_model]."""

    def __init__(self, n_ctx: int, d_model: int) -> None:
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(n_ctx, d_model))

    def forward(self, positions: Tensor) -> Tensor:
        return nn.functional.embedding(positions, self.W_pos)


def sinusoidal_table(n_ctx: int, d_model: int, base: float = 10000.0) -> Float[Tensor, "n_ctx d_model"]:
    """Vaswani et al.'s position table: column ``2i`` is ``sin(p · base^(-2i/d))``, ``2i+1`` its cosine.

    Each position's row is a point on ``d_model/2`` circles, so "the position one back" is the same rotation
    for every position: a single low-rank QK circuit can attend to the previous token at all ``n_ctx``
    positions. Used to *initialise* learned ``W_pos`` (then trained as usual); random rows make that map
    unrepresentable once ``n_ctx`` exceeds the head's rank, and previous-token heads form much later.
    Entries lie in [-1, 1] with a root-mean-square of ``1/sqrt(2)`` per row: scale it to the other weights' init.
    """
    if n_ctx < 1 or d_model < 2 or d_model % 2:
        raise ValueError(f"sinusoidal_table needs n_ctx >= 1 and an even d_model >= 2, got n_ctx={n_ctx}, "
                         f"d_model={d_model}")
    pos = torch.arange(n_ctx, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(base) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.empty(n_ctx, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table.float()


class Unembed(nn.Module):
    """[batch pos d_model] -> logits [batch pos d_vocab_out]."""

    def __init__(self, d_model: int, d_vocab_out: int, bias: bool) -> None:
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(d_model, d_vocab_out))
        self.b_U = nn.Parameter(torch.zeros(d_vocab_out)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        out = x @ self.W_U
        return out + self.b_U if self.b_U is not None else out
