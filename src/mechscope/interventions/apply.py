"""Compile intervention specs to scoped hooks: ``with intervene(model, specs): logits = model(tokens)``.

Each spec becomes one forward hook on its hook point; specs on the same point run in list order. The
new value is computed for the whole activation and merged with ``torch.where(mask, new, old)``, so a
spec never writes into a tensor another part of the model still holds (no in-place edits), and rows,
positions, heads and neurons outside the selection are bit-for-bit untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import ShapeError
from mechscope.hooks.point import HookPoint
from mechscope.interventions.spec import Ablate, Add, Patch, Replace, Spec, _as_index


def spec_hook(spec: Spec) -> Any:
    """The hook function ``fn(activation, hook) -> activation`` that applies one spec."""

    def fn(x: Tensor, hook: HookPoint) -> Tensor:
        new = _new_value(spec, x, hook)
        mask = spec.mask(spec.hook, x.shape, x.device)
        if mask is None:
            return new.expand_as(x).to(x.dtype) if new.shape != x.shape else new.to(x.dtype)
        return torch.where(mask, new.to(x.dtype), x)

    return fn


def _new_value(spec: Spec, x: Tensor, hook: HookPoint) -> Tensor:
    if isinstance(spec, Ablate):
        if spec.kind == "zero":
            return torch.zeros((), dtype=x.dtype, device=x.device)
        ref = _fit_ref(spec.values, x, spec.hook)  # type: ignore[arg-type]
        if spec.kind == "mean":
            return ref.mean(dim=0, keepdim=True)
        gen = torch.Generator().manual_seed(spec.seed)
        pick = torch.randint(ref.shape[0], (x.shape[0],), generator=gen)
        return ref[pick.to(ref.device)]
    if isinstance(spec, Patch):
        src = _fit_ref(spec.source_tensor(), x, spec.hook)
        if spec.source_rows is not None:
            src = src[_as_index(spec.source_rows, src.shape[0], "source_rows", spec.hook)]
        if src.shape[0] not in (1, x.shape[0]):
            raise ShapeError(f"Patch source for {spec.hook!r} has batch {src.shape[0]}, the run has batch "
                             f"{x.shape[0]}: give a source of batch 1 or {x.shape[0]}, or source_rows=")
        return src
    if isinstance(spec, Add):
        return x + spec.scale * spec.vector.to(x.device, x.dtype)
    if isinstance(spec, Replace):
        return spec.fn(x, hook)
    raise TypeError(f"not an intervention spec: {type(spec).__name__}")


def _fit_ref(ref: Tensor, x: Tensor, hook: str) -> Tensor:
    """Check a reference activation [n ...] against the live one; trim/extend nothing silently."""
    if ref.dim() != x.dim() or ref.shape[1:] != x.shape[1:]:
        raise ShapeError(f"activation for {hook!r} has shape {tuple(x.shape)} but the reference/source has "
                         f"{tuple(ref.shape)}: non-batch dims must match (same prompt length and model)")
    return ref.to(x.device)


def compile_specs(specs: Sequence[Spec]) -> list[tuple[str, Any]]:
    """``[(hook_name, hook_fn), ...]`` for ``model.hooks(fwd=...)``, one per spec, in order."""
    return [(s.hook, spec_hook(s)) for s in specs]


@contextlib.contextmanager
def intervene(model: Any, specs: Sequence[Spec]) -> Iterator[Any]:
    """Attach the specs as forward hooks for the duration of the ``with`` block (removed on exit).

    Example:
        >>> with intervene(model, [Ablate(hook="blocks.0.attn.hook_z", heads=[1])]):  # doctest: +SKIP
        ...     logits = model(tokens)
    """
    with model.hooks(fwd=compile_specs(specs)):
        yield model


def run_with_interventions(model: Any, tokens: Tensor, specs: Sequence[Spec], **kwargs: Any) -> Tensor:
    """``model(tokens, **kwargs)`` under ``specs``, without gradients."""
    with torch.no_grad(), intervene(model, specs):
        return model(tokens, **kwargs)


__all__ = ["compile_specs", "intervene", "run_with_interventions", "spec_hook"]
