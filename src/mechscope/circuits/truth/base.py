"""``GroundTruth``: a model, clean/corrupted inputs, a metric and the circuit's edges known by construction.

Edge names follow ``circuits/graph.py``: senders ``input``, ``a{L}.h{H}``, ``m{L}``; receivers
``a{L}.h{H}<q|k|v>`` (grouped-query models: ``a{L}.kv{G}<k|v>``), ``m{L}``, ``logits``; an edge is
``"{sender}->{receiver}"``. Discovery methods are scored by how well their edge scores separate ``edges``
from the rest of the model's graph (``circuits/bench.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jaxtyping import Float, Int
from torch import Tensor

from mechscope.errors import ShapeError
from mechscope.models.transformer import HookedTransformer


@dataclass(frozen=True, eq=False, kw_only=True)
class GroundTruth:
    """A circuit we know, with the data that exercises it."""

    name: str
    """Registry name (``rasp:<program>``, ``planted``, ``induction``, ``ioi``)."""
    model: HookedTransformer
    """The model, in eval mode."""
    clean: Int[Tensor, "batch pos"]
    """Clean token ids."""
    corrupted: Int[Tensor, "batch pos"]
    """Corrupted token ids (same shape): the truth's edges carry what differs."""
    metric: Callable[[Tensor], Tensor]
    """Logits ``[batch pos vocab]`` -> per-example ``[batch]``; higher = more clean-like."""
    edges: frozenset[str]
    """The true circuit's edges."""
    readout: int | None
    """Position the metric reads (None: several positions)."""
    description: str
    """What the circuit is and how its edges were chosen."""

    def __post_init__(self) -> None:
        if self.clean.shape != self.corrupted.shape:
            raise ShapeError(f"ground truth {self.name!r}: clean {tuple(self.clean.shape)} and corrupted "
                             f"{tuple(self.corrupted.shape)} token batches must have the same shape")
        if not self.edges:
            raise ShapeError(f"ground truth {self.name!r} has no edges")


@dataclass(frozen=True, eq=False)
class Contrast:
    """Per-example ``sum over positions and vocabulary of logits · direction``: linear in the logits.

    ``direction`` is ``onehot(clean answer) - onehot(corrupted answer)`` at the positions that count (zero
    elsewhere), or ``clean value - corrupted value`` for a numerical output. Linear, so gradient methods
    see the same metric at every point (a squared error would have zero gradient at the clean run).
    """

    direction: Float[Tensor, "batch pos vocab"]
    """Weights of the logits."""
    name: str = "contrast"
    """Label used in results."""

    def __call__(self, logits: Float[Tensor, "*sweep batch pos vocab"]) -> Float[Tensor, "*sweep batch"]:
        if logits.shape[-3:] != self.direction.shape:
            raise ShapeError(f"metric {self.name}: logits {tuple(logits.shape)} must end with "
                             f"{tuple(self.direction.shape)} (batch pos vocab)")
        return (logits * self.direction.to(logits.dtype)).sum((-1, -2))


@dataclass(frozen=True, eq=False)
class LastLogitDiff:
    """``logit[answer] - logit[wrong]`` at the last position, per example."""

    answer: Int[Tensor, " batch"]
    """Clean answer ids."""
    wrong: Int[Tensor, " batch"]
    """Corrupted answer ids."""
    name: str = "logit_diff"
    """Label used in results."""

    def __call__(self, logits: Float[Tensor, "*sweep batch pos vocab"]) -> Float[Tensor, "*sweep batch"]:
        last = logits[..., -1, :]
        if last.shape[-2] != self.answer.shape[0]:
            raise ShapeError(f"metric {self.name}: logits {tuple(logits.shape)} have batch {last.shape[-2]}, "
                             f"answers have {self.answer.shape[0]}")
        a = last.gather(-1, self.answer.view(*([1] * (last.dim() - 2)), -1, 1).expand(*last.shape[:-1], 1))
        w = last.gather(-1, self.wrong.view(*([1] * (last.dim() - 2)), -1, 1).expand(*last.shape[:-1], 1))
        return (a - w).squeeze(-1)


__all__ = ["Contrast", "GroundTruth", "LastLogitDiff"]
