"""Token embedding ``W_E`` [d_vocab d_model], learned positions ``W_pos`` [n_ctx d_model], unembedding ``W_U``."""

from __future__ import annotations

import torch
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


class Unembed(nn.Module):
    """[batch pos d_model] -> logits [batch pos d_vocab_out]."""

    def __init__(self, d_model: int, d_vocab_out: int, bias: bool) -> None:
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(d_model, d_vocab_out))
        self.b_U = nn.Parameter(torch.zeros(d_vocab_out)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        out = x @ self.W_U
        return out + self.b_U if self.b_U is not None else out
