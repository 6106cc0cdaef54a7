"""Fused weight matrices for inference: several projections of the same input as one matmul.

Q, K and V read the same normalised residual: one GEMM over the concatenated weights [d_in (n1 + n2 + ...)]
replaces several smaller ones (fewer kernel launches and passes over the input). The parameters stay separate (TransformerLens layout, hookable, editable); the
concatenation is a derived copy, cached when no gradient can flow into the weights and rebuilt whenever one
of them changes (its storage, dtype, device or in-place version counter). Under autograd it is rebuilt on
every call, so gradients reach the separate parameters.

Each output column is a dot product over the same d_in terms as in its separate matmul; with this torch's
MKL the results are bit-identical to the unfused projections (checked for SmolLM2's shapes). (A gated MLP's
gate and linear branches fused the same way measured no faster here and cost a 2·d_model·d_mlp copy per
layer, so they stay separate.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


class FusedWeight:
    """A cached ``build(weights)`` that follows edits to ``weights``; see the module docstring."""

    def __init__(self, build: Callable[[Sequence[Tensor]], Tensor]) -> None:
        self._build = build
        self._key: tuple | None = None
        self._value: Tensor | None = None

    def get(self, weights: Sequence[Tensor]) -> Tensor:
        """The fused tensor for ``weights`` (differentiable when autograd is recording)."""
        if torch.is_grad_enabled() and any(w.requires_grad for w in weights):
            return self._build(weights)
        key = tuple((w.data_ptr(), w._version, w.dtype, w.device, w.shape) for w in weights)
        if self._value is None or self._key != key:
            # a normal tensor even under inference_mode, so later autograd-recording calls (frozen weights,
            # input that requires grad) may save it for backward
            with torch.inference_mode(False), torch.no_grad():
                self._value = self._build(weights)
            self._key = key
        return self._value

    def clear(self) -> None:
        """Drop the cached copy (frees its memory)."""
        self._key, self._value = None, None


def cat_heads(weights: Sequence[Tensor]) -> Tensor:
    """Per-head [heads_i d_in d_head] -> [d_in (sum(heads_i) d_head)], heads in order."""
    d = weights[0].shape[1]
    return torch.cat([w.permute(1, 0, 2).reshape(d, -1) for w in weights], dim=1)
