"""``FactoredMatrix``: a low-rank product ``A @ B`` kept as its two factors, and per-head QK / OV circuits.

An attention head's bilinear maps ``W_QK = W_Q W_K^T`` and ``W_OV = W_V W_O`` are ``d_model × d_model``
matrices of rank at most ``d_head``. Materialising them for every head costs ``n_layers·n_heads·d_model²``
numbers and an SVD of each costs ``d_model³``; keeping ``A`` [..., m, k] and ``B`` [..., k, n] instead
lets products, norms, singular values and eigenvalues go through ``k × k`` matrices:

- SVD: ``A = Q_a R_a``, ``B^T = Q_b R_b`` (thin QR), so ``AB = Q_a (R_a R_b^T) Q_b^T`` and the SVD of
  the small core ``R_a R_b^T`` gives that of ``AB``.
- Eigenvalues of a square ``AB``: its nonzero eigenvalues are those of ``BA`` (``k × k``).
- Frobenius norm: ``‖AB‖² = tr(AᵀA · BBᵀ)``.

Leading (batch) dimensions broadcast as in ``torch.matmul``: ``W_OV(model)`` is a ``FactoredMatrix`` of
shape [n_layers n_heads d_model d_model] and ``W_OV(model)[3, 5]`` is head L3H5.

The circuit helpers read the raw weights: they ignore norms (fold them first with
``mechscope.models.weights.process_weights`` for meaningful token-space circuits), biases, the attention
scale and, for rotary models, the position-dependent rotation (``W_QK`` is then the relative-distance-0 map).
``process_weights`` cannot fold Q/K norms (``attention.qk_norm``) or the attention post-norm
(``norm.post_sublayer``): they normalise after the projection, so moving their weights would change the forward.
``mechscope.analysis.weights.head_weights`` (and its ``qk_circuit`` / ``ov_circuit``) folds them for weight-only
analyses.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple, Union

import torch
from torch import Tensor

from mechscope.errors import ShapeError, shape_error

if TYPE_CHECKING:
    from mechscope.models.transformer import HookedTransformer

Index = Union[int, slice, Tensor, list[int], None]


class SVD(NamedTuple):
    """Thin SVD ``AB = U diag(S) Vh`` with r = min(m, k, n) components."""

    U: Tensor
    """[..., m, r] left singular vectors (columns)."""
    S: Tensor
    """[..., r] singular values, descending."""
    Vh: Tensor
    """[..., r, n] right singular vectors (rows)."""


class FactoredMatrix:
    """The product ``A @ B`` of ``A`` [..., m, k] and ``B`` [..., k, n], kept factored.

    Example:
        >>> fm = FactoredMatrix(torch.randn(5, 2), torch.randn(2, 7))
        >>> fm.shape, fm.S.shape
        (torch.Size([5, 7]), torch.Size([2]))
    """

    def __init__(self, A: Tensor, B: Tensor) -> None:
        if A.dim() < 2 or B.dim() < 2:
            raise ShapeError(f"FactoredMatrix needs A [..., m, k] and B [..., k, n] with at least 2 dims; "
                             f"got A {tuple(A.shape)}, B {tuple(B.shape)}")
        if A.shape[-1] != B.shape[-2]:
            raise ShapeError(f"FactoredMatrix: A's last dim ({A.shape[-1]}) must equal B's second-to-last "
                             f"({B.shape[-2]}); got A {tuple(A.shape)}, B {tuple(B.shape)}")
        batch = _broadcast(tuple(A.shape[:-2]), tuple(B.shape[:-2]))
        if batch is None:
            raise ShapeError(f"FactoredMatrix: leading dims of A {tuple(A.shape[:-2])} and B "
                             f"{tuple(B.shape[:-2])} do not broadcast")
        self.A, self.B = A, B
        self.ldim, self.mdim, self.rdim = A.shape[-2], A.shape[-1], B.shape[-1]
        self.batch_shape = batch
        self.shape = torch.Size((*batch, self.ldim, self.rdim))

    # -- basics -----------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Number of dimensions of the represented matrix (leading dims + 2)."""
        return len(self.shape)

    def __repr__(self) -> str:
        return f"FactoredMatrix(shape={tuple(self.shape)}, inner_dim={self.mdim})"

    @property
    def AB(self) -> Tensor:
        """The materialised product [..., m, n]."""
        return self.A @ self.B

    @property
    def BA(self) -> Tensor:
        """``B @ A`` [..., k, k] (needs m == n); same nonzero eigenvalues as ``AB``."""
        if self.ldim != self.rdim:
            raise ShapeError(f"BA needs a square FactoredMatrix, got shape {tuple(self.shape)}")
        return self.B @ self.A

    @property
    def T(self) -> FactoredMatrix:
        """The transpose ``Bᵀ Aᵀ`` [..., n, m]."""
        return FactoredMatrix(self.B.mT, self.A.mT)

    def __mul__(self, scalar: float | Tensor) -> FactoredMatrix:
        """Scale by a number (or a 0-dim tensor)."""
        if isinstance(scalar, Tensor) and scalar.dim() != 0:
            raise ShapeError(f"FactoredMatrix * x needs a scalar, got shape {tuple(scalar.shape)}")
        return FactoredMatrix(self.A * scalar, self.B)

    __rmul__ = __mul__

    # -- products ---------------------------------------------------------------------------------
    def __matmul__(self, other: Tensor | FactoredMatrix) -> Any:
        """``self @ other``: a FactoredMatrix for a matrix or FactoredMatrix, a Tensor [..., m] for a vector.

        With another FactoredMatrix the smaller of the two inner dims is kept.
        """
        if isinstance(other, FactoredMatrix):
            if other.ldim != self.rdim:
                raise shape_error("right operand of FactoredMatrix @", f"[..., {self.rdim}, *]", other.shape)
            if self.mdim <= other.mdim:
                return FactoredMatrix(self.A, (self.B @ other.A) @ other.B)
            return FactoredMatrix(self.A @ (self.B @ other.A), other.B)
        if other.shape[-1 if other.dim() == 1 else -2] != self.rdim:
            raise shape_error("right operand of FactoredMatrix @", f"[..., {self.rdim}, *] or [{self.rdim}]",
                              other.shape)
        if other.dim() == 1:
            return (self.A @ (self.B @ other[:, None]))[..., 0]
        return FactoredMatrix(self.A, self.B @ other)

    def __rmatmul__(self, other: Tensor) -> Any:
        """``other @ self``: a FactoredMatrix for a matrix [..., p, m], a Tensor [..., n] for a vector."""
        if other.shape[-1] != self.ldim:
            raise shape_error("left operand of @ FactoredMatrix", f"[..., *, {self.ldim}]", other.shape)
        if other.dim() == 1:
            return ((other[None, :] @ self.A) @ self.B)[..., 0, :]
        return FactoredMatrix(other @ self.A, self.B)

    # -- spectra ----------------------------------------------------------------------------------
    def svd(self) -> SVD:
        """Thin SVD of ``AB`` through the small core (see the module docstring); cached."""
        return self._svd

    @cached_property
    def _svd(self) -> SVD:
        Qa, Ra = torch.linalg.qr(self.A)  # [.., m, r1], [.., r1, k]
        Qb, Rb = torch.linalg.qr(self.B.mT)  # [.., n, r2], [.., r2, k]
        core = Ra @ Rb.mT  # [.., r1, r2]
        Uc, S, Vhc = torch.linalg.svd(core, full_matrices=False)
        return SVD(Qa @ Uc, S, Vhc @ Qb.mT)

    @property
    def U(self) -> Tensor:
        """[..., m, r] left singular vectors."""
        return self._svd.U

    @property
    def S(self) -> Tensor:
        """[..., r] singular values, descending."""
        return self._svd.S

    @property
    def Vh(self) -> Tensor:
        """[..., r, n] right singular vectors (rows)."""
        return self._svd.Vh

    @property
    def eigenvalues(self) -> Tensor:
        """The k eigenvalues of ``BA`` (complex) [..., k]: the nonzero eigenvalues of the square ``AB``.

        ``AB`` (m × m) has these plus ``m - k`` zeros.
        """
        return torch.linalg.eigvals(self.BA)

    def norm(self) -> Tensor:
        """Frobenius norm of ``AB`` [...], via ``tr(AᵀA · BBᵀ)`` (k × k matrices only)."""
        gram_a = self.A.mT @ self.A
        gram_b = self.B @ self.B.mT
        return (gram_a * gram_b).sum((-2, -1)).clamp_min(0).sqrt()

    def make_even(self) -> FactoredMatrix:
        """The same product with balanced factors ``U sqrt(S)`` and ``sqrt(S) Vh``."""
        root = self.S.sqrt()
        return FactoredMatrix(self.U * root[..., None, :], root[..., :, None] * self.Vh)

    # -- indexing ---------------------------------------------------------------------------------
    def get_corner(self, k: int = 3) -> Tensor:
        """The materialised top-left ``k × k`` block [..., k, k] (a cheap peek at a big product)."""
        return self.A[..., :k, :] @ self.B[..., :, :k]

    def __getitem__(self, idx: Index | tuple[Index, ...]) -> FactoredMatrix:
        """Index the leading dims (any torch index), then optionally the rows and columns (slices/lists).

        ``fm[3, 5]`` picks one head of a [layer head m n] matrix; ``fm[3, 5, :10, 2:]`` also slices rows
        and columns. An integer on the row or column axis would not leave a matrix and is refused.
        """
        idx = idx if isinstance(idx, tuple) else (idx,)
        nb = len(self.batch_shape)
        if any(i is Ellipsis or i is None for i in idx) or len(idx) > nb + 2:
            raise IndexError(f"FactoredMatrix of shape {tuple(self.shape)} takes at most {nb + 2} indices "
                             "(no ... or None)")
        A = self.A.expand(*self.batch_shape, *self.A.shape[-2:])
        B = self.B.expand(*self.batch_shape, *self.B.shape[-2:])
        lead, tail = idx[:nb], idx[nb:]
        if any(isinstance(i, int) for i in tail):
            raise IndexError("index the row/column axes of a FactoredMatrix with slices or lists, "
                             "not integers (use .AB to get a tensor)")
        A, B = A[lead], B[lead]
        if len(tail) >= 1:
            A = A[..., tail[0], :]
        if len(tail) == 2:
            B = B[..., tail[1]]
        return FactoredMatrix(A, B)


# -- per-head circuits ----------------------------------------------------------------------------
def _repeat_kv(w: Tensor, model: HookedTransformer) -> Tensor:
    """[layers n_kv_heads ...] -> [layers n_heads ...]: query head h reads kv head h // (n_heads/kv)."""
    rep = model.cfg.n_heads // model.cfg.attention.kv_heads
    return w if rep == 1 else w.repeat_interleave(rep, dim=1)


def _layers(w: Tensor, layer: int | None) -> Tensor:
    return w if layer is None else w[layer]


def W_QK(model: HookedTransformer, layer: int | None = None) -> FactoredMatrix:
    """Per-head ``W_Q W_Kᵀ`` [n_layers n_heads d_model d_model] ([n_heads ...] for one ``layer``).

    ``x_q W_QK x_kᵀ`` is the attention score before scaling (no biases, no rotary). Weights are detached.
    """
    W_Q = model.W_Q.detach()
    W_K = _repeat_kv(model.W_K.detach(), model)
    return FactoredMatrix(_layers(W_Q, layer), _layers(W_K, layer).mT)


def W_OV(model: HookedTransformer, layer: int | None = None) -> FactoredMatrix:
    """Per-head ``W_V W_O`` [n_layers n_heads d_model d_model]: what a head writes per unit of attention.

    Grouped-query models repeat each value head for the query heads sharing it. Weights are detached.
    """
    W_V = _repeat_kv(model.W_V.detach(), model)
    return FactoredMatrix(_layers(W_V, layer), _layers(model.W_O.detach(), layer))


def OV_circuit(model: HookedTransformer, layer: int | None = None) -> FactoredMatrix:
    """Full OV circuit ``W_E W_OV W_U`` [(n_layers) n_heads d_vocab d_vocab_out], inner dim ``d_head``.

    Entry [.., s, t]: how much attending to token s raises the logit of token t (norms ignored).
    """
    return (model.W_E.detach() @ W_OV(model, layer)) @ model.W_U.detach()


def QK_circuit(model: HookedTransformer, layer: int | None = None) -> FactoredMatrix:
    """Full QK circuit ``W_E W_QK W_Eᵀ`` [(n_layers) n_heads d_vocab d_vocab]: query token × key token scores.

    Token embeddings only (no positional embeddings, norms, biases or scale).
    """
    W_E = model.W_E.detach()
    return (W_E @ W_QK(model, layer)) @ W_E.T


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> torch.Size | None:
    """Broadcast two shapes (None if incompatible); plain Python because ``torch.broadcast_shapes``
    imports sympy on first use (~5 s)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for x, y in zip(a, b):
        if x != y and 1 not in (x, y):
            return None
        out.append(y if x == 1 else x)
    return torch.Size(out)
