"""Sparse training kernels: encode densely once, then do everything else on the few active latents.

A TopK step needs the dense pre-activations only to *choose* latents. After that, the values, the
decoder, and all gradients involve just the ``nnz = batch * k`` chosen (row, latent) pairs:

* :func:`gather_pre` returns the chosen pre-activations with a backward that scatters gradients into
  ``W_enc`` / ``b_enc`` / the input through sparse matrix products (``nnz * d_in`` work instead of a dense
  ``batch * d_sae * d_in`` matmul);
* :func:`sparse_decode` reconstructs with ``embedding_bag`` (a fused gather-and-sum over decoder rows
  whose backward is an ``index_add``), never materialising the dense ``[batch d_sae]`` code.

Pairs are given as ``rows`` (sorted ascending), ``cols`` (latent index) and per-row ``offsets``.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


class SparseCode(NamedTuple):
    """Non-zero pattern of a ``[n_rows d_sae]`` code, indexed both row-major and latent-major."""

    rows: Tensor
    """Int64 ``[nnz]`` token index of each pair (sorted ascending)."""
    cols: Tensor
    """Int64 ``[nnz]`` latent index of each pair."""
    offsets: Tensor
    """Int64 ``[n_rows]`` start of each row's pairs (``embedding_bag`` offsets)."""
    crow: Tensor
    """Int64 ``[n_rows + 1]`` CSR row pointer of the row-major pattern."""
    perm: Tensor
    """Int64 ``[nnz]`` order that sorts the pairs by latent (stable)."""
    crow_latent: Tensor
    """Int64 ``[d_sae + 1]`` CSR row pointer of the latent-major (transposed) pattern."""
    n_rows: int
    """Number of tokens."""
    d_sae: int
    """Number of latents."""

    def by_row(self, values: Tensor) -> Tensor:
        """CSR ``[n_rows d_sae]`` matrix with ``values`` (row-major order)."""
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.cols, values, (self.n_rows, self.d_sae),
                                           check_invariants=False)

    def by_latent(self, values: Tensor) -> Tensor:
        """CSR ``[d_sae n_rows]`` transpose of :meth:`by_row`."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow_latent, self.rows[self.perm], values[self.perm],
                                           (self.d_sae, self.n_rows), check_invariants=False)


def _stable_argsort(x: Tensor) -> Tensor:
    # torch's parallel integer sort is pathologically slow on a contended 2-core CPU (~300 ms for
    # 131k items against ~10 ms for numpy), and this runs every step.
    if x.device.type == "cpu":
        return torch.from_numpy(np.argsort(x.numpy(), kind="stable"))
    return torch.sort(x, stable=True).indices


def build_code(rows: Tensor, cols: Tensor, n_rows: int, d_sae: int) -> SparseCode:
    """Index a pattern given ``rows`` sorted ascending and ``cols``."""
    counts = torch.bincount(rows, minlength=n_rows)
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    torch.cumsum(counts, 0, out=crow[1:])
    lat_counts = torch.bincount(cols, minlength=d_sae)
    crow_latent = torch.zeros(d_sae + 1, dtype=torch.int64, device=rows.device)
    torch.cumsum(lat_counts, 0, out=crow_latent[1:])
    return SparseCode(rows, cols, crow[:-1], crow, _stable_argsort(cols), crow_latent, n_rows, d_sae)


def code_from_topk(indices: Tensor, d_sae: int) -> SparseCode:
    """Pattern of a per-row top-k selection ``indices [n_rows k]``."""
    n, k = indices.shape
    rows = torch.arange(n, device=indices.device).repeat_interleave(k)
    return build_code(rows, indices.reshape(-1), n, d_sae)


def code_from_flat(flat: Tensor, n_rows: int, d_sae: int) -> SparseCode:
    """Pattern of flat indices into a ``[n_rows d_sae]`` matrix (sorted here, so any order is fine)."""
    flat = flat[_stable_argsort(flat)]
    rows = torch.div(flat, d_sae, rounding_mode="floor")
    return build_code(rows, flat - rows * d_sae, n_rows, d_sae)


@torch.no_grad()
def exact_pre(code: SparseCode, x_c: Tensor, W_enc: Tensor, b_enc: Tensor) -> Tensor:
    """``[nnz]`` pre-activations ``x_c @ W_enc + b_enc`` at the ``code`` pairs only, in ``W_enc``'s dtype.

    A sampled matmul (``nnz * d_in`` work). Used when the dense encode that *chose* the pairs ran in a lower
    precision (bf16 autocast): the selection may round, the values and everything after them do not.
    """
    base = code.by_row(b_enc[code.cols].to(W_enc.dtype))
    with torch.autocast(x_c.device.type, enabled=False):
        return torch.sparse.sampled_addmm(base, x_c.to(W_enc.dtype), W_enc).values()


class _GatherPre(torch.autograd.Function):
    """Chosen pre-activations; backward is sparse in W_enc and b_enc (see module docstring)."""

    @staticmethod
    def forward(ctx: Any, x_c: Tensor, W_enc: Tensor, b_enc: Tensor, code: SparseCode, values: Tensor) -> Tensor:
        ctx.save_for_backward(x_c)
        ctx.code = code
        return values.clone()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        (x_c,) = ctx.saved_tensors
        code: SparseCode = ctx.code
        g = g.contiguous()
        d_w = (code.by_latent(g) @ x_c).t() if ctx.needs_input_grad[1] else None
        d_b = None
        if ctx.needs_input_grad[2]:
            d_b = torch.zeros(code.d_sae, dtype=g.dtype, device=g.device).index_add_(0, code.cols, g)
        return None, d_w, d_b, None, None


def gather_pre(x_c: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None, code: SparseCode,
               values: Tensor) -> Tensor:
    """Differentiable ``(x_c @ W_enc + b_enc)[rows, cols]`` given those values computed without grad.

    ``x_c = x_s - b_dec`` is treated as data; the gradient to ``b_dec`` (when given) flows through the
    exact identity ``d pre / d b_dec = -W_enc[:, col]``, at ``d_sae * d_in`` cost instead of per token.

    Args:
        x_c: ``[n_rows d_in]`` centred input; W_enc ``[d_in d_sae]``; b_enc ``[d_sae]``; b_dec ``[d_in]``.
        code: which pairs; values: ``[nnz]`` their pre-activations (from a no-grad dense encode).
    """
    out = _GatherPre.apply(x_c.detach(), W_enc, b_enc, code, values)
    if b_dec is not None and b_dec.requires_grad:
        shift = -(b_dec @ W_enc.detach())
        out = out + (shift - shift.detach())[code.cols]
    return out


class _SparseDecode(torch.autograd.Function):
    """``code @ W_dec`` by ``embedding_bag``; backward by sampled matmul and a CSR matmul."""

    @staticmethod
    def forward(ctx: Any, values: Tensor, W_dec: Tensor, code: SparseCode) -> Tensor:
        ctx.save_for_backward(values, W_dec)
        ctx.code = code
        return F.embedding_bag(code.cols, W_dec, code.offsets, mode="sum", per_sample_weights=values)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        values, W_dec = ctx.saved_tensors
        code: SparseCode = ctx.code
        g = g.contiguous()
        d_v = d_w = None
        if ctx.needs_input_grad[0]:
            d_v = torch.sparse.sampled_addmm(code.by_row(torch.zeros_like(values)), g, W_dec.t(),
                                             beta=0.0).values()
        if ctx.needs_input_grad[1]:
            d_w = code.by_latent(values) @ g
        return d_v, d_w, None


def sparse_decode(code: SparseCode, values: Tensor, W_dec: Tensor) -> Tensor:
    """``dense_code @ W_dec`` for ``values [nnz]`` at the ``code`` pairs: ``[n_rows d_out]`` (no bias)."""
    return _SparseDecode.apply(values, W_dec, code)


def to_dense(code: SparseCode, values: Tensor, width: int) -> Tensor:
    """The dense ``[n_rows width]`` matrix of a sparse code (for tests and inference outputs)."""
    out = values.new_zeros(code.n_rows, width)
    out[code.rows, code.cols] = values
    return out


def fired_counts(code: SparseCode, values: Tensor, d_sae: int) -> Tensor:
    """``[d_sae]`` number of rows in which each latent is non-zero."""
    return torch.bincount(code.cols[values != 0], minlength=d_sae)


__all__ = ["SparseCode", "build_code", "exact_pre", "code_from_topk", "code_from_flat", "gather_pre", "sparse_decode", "to_dense",
           "fired_counts"]
