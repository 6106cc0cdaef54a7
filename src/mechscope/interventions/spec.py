"""Intervention specs: frozen dataclasses saying *what* to change at a hook point, compiled to hooks later.

An intervention is data, not code: ``Ablate``, ``Patch``, ``Add`` and ``Replace`` name a hook point and a
*selection* of the activation (batch ``rows``, ``positions``, ``heads``, ``neurons``); ``apply.intervene``
turns a list of them into scoped hooks. Because every spec carries its own ``rows``, one batch can hold
differently-intervened copies of a prompt (row 0 clean, row 1 head 3.2 ablated, ...), which is how the
batched patching sweeps work.

Axes of a selection are read from the hook's registered shape (``hooks/names.py``): ``positions`` index the
``pos`` axis (the *query* axis for ``hook_pattern``/``hook_attn_scores``), ``heads`` the head axis
(``hook_z``, ``hook_q``, ``hook_result``, per-head inputs, patterns), ``neurons`` the last axis
(``d_model``, ``d_mlp``, ``d_head``; the key axis for patterns). ``None`` selects everything on that axis.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from mechscope.errors import ConfigError, ShapeError
from mechscope.hooks.names import registered_axes

Index = Sequence[int] | Tensor | None

_POS_AXES = ("pos", "query_pos")
_HEAD_AXES = ("n_heads", "n_kv_heads")


def _check_hook(hook: str) -> None:
    if not isinstance(hook, str) or not hook:
        raise ConfigError(f"hook must be a full hook name such as 'blocks.3.attn.hook_z', got {hook!r}")


@dataclass(frozen=True, kw_only=True, eq=False)
class Selection:
    """Which part of an activation an intervention touches (``None`` = all along that axis)."""

    rows: Index = None
    """Batch rows the intervention applies to."""
    positions: Index = None
    """Sequence positions (query positions for attention patterns)."""
    heads: Index = None
    """Attention heads, for hooks with a head axis."""
    neurons: Index = None
    """Indices along the last axis (d_model, d_mlp, d_head; key positions for patterns)."""

    def mask(self, hook: str, shape: torch.Size, device: torch.device) -> Tensor | None:
        """Bool mask broadcastable to ``shape`` (True = intervene), or None when everything is selected."""
        if self.rows is None and self.positions is None and self.heads is None and self.neurons is None:
            return None
        axes = _axes_for(hook, len(shape))
        mask = torch.ones((1,) * len(shape), dtype=torch.bool, device=device)
        wanted: list[tuple[int, Index, str]] = [(0, self.rows, "rows")]
        if self.positions is not None:
            wanted.append((_find_axis(hook, axes, _POS_AXES, "positions"), self.positions, "positions"))
        if self.heads is not None:
            wanted.append((_find_axis(hook, axes, _HEAD_AXES, "heads"), self.heads, "heads"))
        if self.neurons is not None:
            wanted.append((len(shape) - 1, self.neurons, "neurons"))
        for axis, idx, what in wanted:
            if idx is None:
                continue
            m = torch.zeros(shape[axis], dtype=torch.bool, device=device)
            m[_as_index(idx, shape[axis], what, hook)] = True
            view = [1] * len(shape)
            view[axis] = shape[axis]
            mask = mask & m.view(view)
        return mask


def _axes_for(hook: str, ndim: int) -> tuple[str, ...]:
    try:
        axes = registered_axes(hook)
    except KeyError:
        axes = ("batch", "pos") + tuple(f"dim{i}" for i in range(ndim - 2))
    if len(axes) != ndim:
        raise ShapeError(f"hook {hook!r}: registered axes {axes} but the activation has {ndim} dims")
    return axes


def _find_axis(hook: str, axes: tuple[str, ...], names: tuple[str, ...], what: str) -> int:
    for i, a in enumerate(axes):
        if a in names:
            return i
    raise ConfigError(f"{what}= was given but hook {hook!r} (axes {axes}) has no {'/'.join(names)} axis")


def _as_index(idx: Index, size: int, what: str, hook: str) -> Tensor:
    """Integer indices [n] into an axis of ``size``: a list/tensor of ints (negative counts from the end), or
    a boolean mask of exactly ``size`` entries selecting where it is True. Floats are refused."""
    if isinstance(idx, (bool, float)) or (isinstance(idx, Tensor) and idx.is_floating_point()):
        raise ConfigError(f"{what} for hook {hook!r} must be ints or a boolean mask, got {_show(idx)}")
    if isinstance(idx, numbers.Integral):
        idx = [int(idx)]
    if not isinstance(idx, Tensor):
        if isinstance(idx, (str, bytes)) or (not isinstance(idx, (Sequence, range)) and not hasattr(idx, "__array__")):
            raise ConfigError(f"{what} for hook {hook!r} must be a list of ints, a tensor or a boolean mask, "
                              f"got {_show(idx)}")
        items = list(idx) if isinstance(idx, (Sequence, range)) else None
        if items is not None:
            kinds = {type(v) for v in items}
            if items and kinds <= {bool}:
                items, idx = None, torch.tensor(items, dtype=torch.bool)
            elif not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
                raise ConfigError(f"{what} for hook {hook!r} must be ints (or all booleans, a mask), got "
                                  f"{_show(idx)}")
        try:
            idx = torch.as_tensor(idx) if items is None else torch.tensor([int(v) for v in items], dtype=torch.long)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"{what} for hook {hook!r} could not be read as indices: {e}") from None
        if idx.is_floating_point() or idx.is_complex():
            raise ConfigError(f"{what} for hook {hook!r} must be ints or a boolean mask, got {_show(idx)}")
    if idx.dtype == torch.bool:
        mask = idx.reshape(-1)
        if mask.numel() != size:
            raise ConfigError(f"{what} boolean mask for hook {hook!r} has {mask.numel()} entries but the axis "
                              f"has size {size}; a mask needs one entry per index (or pass integer indices)")
        return mask.nonzero().reshape(-1)
    t = idx.to(torch.long).reshape(-1)
    if t.numel() and (int(t.min()) < -size or int(t.max()) >= size):
        raise ConfigError(f"{what} index out of range for hook {hook!r}: axis has size {size}, got {t.tolist()}")
    return t


def _show(idx: object) -> str:
    text = repr(idx.tolist() if isinstance(idx, Tensor) else idx)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({type(idx).__name__})"


@dataclass(frozen=True, kw_only=True, eq=False)
class Ablate(Selection):
    """Knock out the selected part of ``hook``: set it to zero, to its mean, or to a resampled value.

    ``mean`` uses the mean over the batch axis of ``values`` (activations of a reference batch at this hook,
    [n ...] with the same non-batch shape); ``resample`` gives each row the activation of a random row of
    ``values`` (a corrupted distribution), drawn with ``seed``.
    """

    hook: str
    """Full hook name."""
    kind: Literal["zero", "mean", "resample"] = "zero"
    """Ablation kind."""
    values: Tensor | None = None
    """Reference activations [n ...] for ``mean`` and ``resample``."""
    seed: int = 0
    """Seed of the resampling draw."""

    def __post_init__(self) -> None:
        _check_hook(self.hook)
        if self.kind not in ("zero", "mean", "resample"):
            raise ConfigError(f"Ablate.kind must be 'zero', 'mean' or 'resample', got {self.kind!r}")
        if self.kind != "zero" and self.values is None:
            raise ConfigError(f"Ablate(kind={self.kind!r}) needs values=<reference activations [n ...]> "
                              f"for {self.hook!r}, e.g. cache[{self.hook!r}] from a reference batch")


@dataclass(frozen=True, kw_only=True, eq=False)
class Patch(Selection):
    """Overwrite the selected part of ``hook`` with the same part of another run's activation.

    ``source`` is a tensor or an ``ActivationCache`` (its ``hook`` entry); its batch is the target batch,
    1 (broadcast), or gathered row by row with ``source_rows`` (row i takes ``source[source_rows[i]]``).
    """

    hook: str
    """Full hook name."""
    source: Tensor | Mapping[str, Tensor]
    """Source activation or a cache holding ``hook``."""
    source_rows: Index = None
    """Per-target-row index into the source batch (None = row i takes row i, or row 0 if the source has 1)."""

    def __post_init__(self) -> None:
        _check_hook(self.hook)
        if not isinstance(self.source, Tensor) and self.hook not in self.source:
            raise ConfigError(f"Patch source cache has no entry {self.hook!r}; cache it with "
                              f"run_with_cache(names=[{self.hook!r}, ...])")

    def source_tensor(self) -> Tensor:
        """The source activation for this hook."""
        return self.source if isinstance(self.source, Tensor) else self.source[self.hook]


@dataclass(frozen=True, kw_only=True, eq=False)
class Add(Selection):
    """Add ``scale * vector`` to the selected part of ``hook`` (steering); ``vector`` broadcasts to it."""

    hook: str
    """Full hook name."""
    vector: Tensor
    """Direction to add, broadcastable to the activation (e.g. [d_model])."""
    scale: float = 1.0
    """Multiplier of ``vector``."""

    def __post_init__(self) -> None:
        _check_hook(self.hook)
        if not isinstance(self.vector, Tensor):
            raise ConfigError(f"Add.vector must be a tensor, got {type(self.vector).__name__}")


@dataclass(frozen=True, kw_only=True, eq=False)
class Replace(Selection):
    """Replace the selected part of ``hook`` by ``fn(activation, hook_point)`` (any custom edit)."""

    hook: str
    """Full hook name."""
    fn: Callable[..., Tensor]
    """Function of (activation, hook point) returning a tensor broadcastable to the activation."""

    def __post_init__(self) -> None:
        _check_hook(self.hook)
        if not callable(self.fn):
            raise ConfigError(f"Replace.fn must be callable, got {type(self.fn).__name__}")


Spec = Ablate | Patch | Add | Replace

__all__ = ["Ablate", "Add", "Patch", "Replace", "Selection", "Spec"]
