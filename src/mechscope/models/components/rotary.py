"""Rotary position embeddings (RoPE), "rotate half" convention (Llama, NeoX, Qwen2, Mistral in HF).

Only the first ``rotary_dim`` dimensions of each head rotate (NeoX rotates a fraction). Dimension ``i`` of
the first half pairs with ``i + rotary_dim/2``: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), i.e.
``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = (-x2, x1)``. The sine table is stored with
``rotate_half``'s sign folded in (``sin_signed = (-sin, sin)``), so outside autograd the rotation is one
multiply, two half-width multiplies into a scratch buffer and one add, with no ``rotate_half`` copy or concat
and the same roundings (hence the same bits) as transformers' ``apply_rotary_pos_emb``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rotary_cos_sin(positions: Tensor, rotary_dim: int, base: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Tables ``cos`` and ``sin_signed`` [batch pos 1 rotary_dim] for integer ``positions`` [batch pos].

    ``cos`` = (cos θ, cos θ) and ``sin_signed`` = (-sin θ, sin θ) over the ``rotary_dim/2`` angles θ. When
    every row of ``positions`` is the same (an ``expand``ed range, i.e. no padding) the tables have batch
    size 1 and broadcast.
    """
    if positions.dim() == 2 and positions.shape[0] > 1 and positions.stride(0) == 0:
        positions = positions[:1]
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim))
    freqs = (positions.float()[..., None] * inv_freq)[:, :, None, :]  # [batch pos 1 rotary_dim/2]
    cos, sin = freqs.cos(), freqs.sin()
    return torch.cat([cos, cos], dim=-1).to(dtype), torch.cat([-sin, sin], dim=-1).to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin_signed: Tensor) -> Tensor:
    """Rotate the leading ``rotary_dim`` (the tables' last dim) dims of ``x`` [batch pos heads d_head].

    ``x`` may be a strided view (e.g. the Q and K heads of a fused projection); the result is a new
    contiguous tensor, later dimensions copied unchanged.
    """
    rd = cos.shape[-1]
    half = rd // 2
    rot = x[..., :rd]
    x1, x2 = rot[..., :half], rot[..., half:]
    if torch.is_grad_enabled() and (x.requires_grad or cos.requires_grad):  # out= ops do not record autograd
        turned = torch.cat([x2, x1], dim=-1)  # rotate_half without its sign (in sin_signed)
        rotated = rot * cos + turned * sin_signed
        return rotated if rd == x.shape[-1] else torch.cat([rotated, x[..., rd:]], dim=-1)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    turned = torch.empty_like(out[..., :rd], memory_format=torch.contiguous_format)
    torch.mul(x2, sin_signed[..., :half], out=turned[..., :half])  # -x2 sin
    torch.mul(x1, sin_signed[..., half:], out=turned[..., half:])  # x1 sin
    o = out[..., :rd]
    torch.mul(rot, cos, out=o).add_(turned)
    if rd < x.shape[-1]:
        out[..., rd:] = x[..., rd:]
    return out
