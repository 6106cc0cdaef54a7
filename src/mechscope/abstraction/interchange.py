"""Interchange interventions: run a *base* input with part of one activation taken from *source* inputs.

The part is a subspace of the activation's last axis, described in a rotated basis: with an orthogonal
``rotation`` R [d d] (columns = the new basis) and one mask per source ``masks`` [n_sources d] (1 = take this
rotated coordinate from that source), the new activation is

    r = x R;   r ← r + Σ_v masks[v] ⊙ (s_v R - r);   x' = r Rᵀ

(soft masks in [0, 1] are allowed: boundless DAS learns them). With R = I and a full mask this replaces the
whole activation by the source's; with R's first k columns spanning a subspace and a mask on them, it
swaps exactly that subspace. ``positions`` restricts the swap to some sequence positions of ``[batch pos d]``
activations (all positions by default; ``[batch d]`` activations have none).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mechscope.errors import ConfigError, ShapeError


def block_masks(d: int, dims: Sequence[int]) -> Float[Tensor, "n_vars d"]:
    """Masks of consecutive blocks: variable v gets rotated coordinates ``[Σ dims[:v], Σ dims[:v+1])``."""
    if any(k < 1 for k in dims) or not dims:
        raise ConfigError(f"subspace dims must be positive ints, got {list(dims)}")
    if sum(dims) > d:
        raise ShapeError(f"subspaces of {list(dims)} dims ({sum(dims)} in all) are larger than the hook's "
                         f"width {d}; choose dims summing to at most {d}")
    m = torch.zeros(len(dims), d)
    start = 0
    for v, k in enumerate(dims):
        m[v, start:start + k] = 1.0
        start += k
    return m


def rotation_from_basis(basis: Float[Tensor, "d k"], seed: int = 0) -> Float[Tensor, "d d"]:
    """An orthogonal [d d] whose first k columns span ``basis`` (completed by a seeded random QR)."""
    d, k = basis.shape
    if k > d:
        raise ShapeError(f"a subspace of {k} dims is larger than the hook's width {d}")
    fill = torch.randn(d, d - k, generator=torch.Generator().manual_seed(seed), dtype=basis.dtype)
    q, r = torch.linalg.qr(torch.cat([basis, fill], dim=1))
    return q * torch.sign(torch.diagonal(r))[None, :]


def swap(x: Tensor, sources: Sequence[Tensor], rotation: Tensor | None, masks: Tensor) -> Tensor:
    """The interchange formula of the module docstring on the last axis (differentiable in R and masks).

    ``rotation`` may also be *partial*, [d K] with K < d orthonormal columns (the only ones the masks
    touch): then ``x' = x + (r' - x R) Rᵀ``, which for a square R is the formula above.
    """
    d = x.shape[-1]
    width = rotation.shape[1] if rotation is not None else d
    if masks.dim() != 2 or masks.shape[1] != width or masks.shape[0] != len(sources):
        raise ShapeError(f"masks must be [n_sources={len(sources)} {width}], got {tuple(masks.shape)}")
    rot = rotation if rotation is not None else None
    r0 = x @ rot if rot is not None else x
    r = r0
    for v, s in enumerate(sources):
        if s.shape != x.shape:
            raise ShapeError(f"source activation {v} has shape {tuple(s.shape)}, the base has {tuple(x.shape)}")
        rs = s @ rot if rot is not None else s
        r = r + masks[v] * (rs - r)
    if rot is None:
        return r
    return r @ rot.T if width == d else x + (r - r0) @ rot.T


def capture(model: Any, inputs: Tensor, hook: str, **kwargs: Any) -> Tensor:
    """The activation at ``hook`` for ``inputs`` (no gradient)."""
    model.hook_names([hook])  # unknown hook -> HookNameError with close matches
    got: dict[str, Tensor] = {}

    def save(x: Tensor, hp: Any) -> None:
        got["x"] = x.detach()

    with torch.no_grad(), model.hooks(fwd=[(hook, save)]):
        model(inputs, **kwargs)
    return got["x"]


def swap_hook(sources: Sequence[Tensor], rotation: Tensor | None, masks: Tensor,
              positions: Sequence[int] | None = None) -> Callable[[Tensor, Any], Tensor]:
    """A forward hook applying :func:`swap` (only at ``positions`` of ``[batch pos d]`` activations)."""

    def fn(x: Tensor, hp: Any) -> Tensor:
        new = swap(x, sources, rotation, masks)
        if positions is None:
            return new
        if x.dim() < 3:
            raise ConfigError(f"positions= given but {hp.name!r} has no position axis (shape {tuple(x.shape)})")
        keep = torch.zeros(x.shape[1], dtype=torch.bool, device=x.device)
        keep[torch.as_tensor(list(positions), dtype=torch.long)] = True
        return torch.where(keep.view(1, -1, *([1] * (x.dim() - 2))), new, x)

    return fn


def interchange(model: Any, base: Tensor, sources: Sequence[Tensor], hook: str, *, rotation: Tensor | None = None,
                masks: Tensor | None = None, positions: Sequence[int] | None = None, **kwargs: Any) -> Tensor:
    """``model(base)`` with the activation at ``hook`` interchanged with the ``sources``' (see module docstring).

    ``masks`` default: one source, the whole activation. Returns the model output (no gradient).
    """
    if len(sources) == 0:
        raise ConfigError("interchange needs at least one source input")
    acts = [capture(model, s, hook, **kwargs) for s in sources]
    d = acts[0].shape[-1]
    if masks is None:
        if len(sources) != 1:
            raise ConfigError("several sources need masks [n_sources d] saying which coordinates each supplies")
        masks = torch.ones(1, d)
    if rotation is not None and rotation.shape != (d, d):
        raise ShapeError(f"rotation must be [{d} {d}] for hook {hook!r}, got {tuple(rotation.shape)}")
    with torch.no_grad(), model.hooks(fwd=[(hook, swap_hook(acts, rotation, masks, positions))]):
        return model(base, **kwargs)


__all__ = ["block_masks", "capture", "interchange", "rotation_from_basis", "swap", "swap_hook"]
