"""Batch sources: where the trainer's batches come from, with a state that makes resuming exact.

A ``BatchSource`` hands out one batch per update and can save and restore its position, so a run that
is killed and resumed sees exactly the batches an uninterrupted run would have seen:

- ``FullBatch``: the same (tensor or tuple of tensors) batch every step (full-batch gradient descent);
- ``RandomBatches``: shuffled mini-batches from in-memory tensors, drawn with a private seeded
  ``torch.Generator`` whose state is checkpointed;
- ``ReplayIterator``: any deterministic iterator factory (e.g. a text corpus chunker); on resume the
  factory is called again and the already-consumed batches are skipped (cheap for fast iterators; write
  your own ``BatchSource`` if skipping would be slow).

State is split into a JSON part (counters) and a tensor part (generator states, permutations), both
stored in the checkpoint without pickle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from mechscope.errors import ConfigError, ModelFileError, ShapeError


@runtime_checkable
class BatchSource(Protocol):
    """One batch per call, and a resumable position."""

    def next_batch(self) -> Any:
        """The batch for the next update (passed unchanged to the loss function)."""
        ...

    def state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """(JSON-serialisable scalars, named tensors) describing the position."""
        ...

    def load_state(self, meta: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        """Restore the position saved by ``state``."""
        ...


class FullBatch:
    """The same batch every update (full-batch training)."""

    def __init__(self, batch: Any) -> None:
        self.batch = batch
        self.count = 0

    def next_batch(self) -> Any:
        self.count += 1
        return self.batch

    def state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        return {"kind": "full", "count": self.count}, {}

    def load_state(self, meta: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        _expect_kind(meta, "full")
        self.count = int(meta["count"])


class RandomBatches:
    """Shuffled mini-batches of rows of ``tensors`` (all sharing the first dimension), epoch after epoch.

    Each epoch is a fresh permutation drawn from a private generator seeded with ``seed``; the last
    incomplete batch of an epoch is dropped so every batch has ``batch_size`` rows.
    Returns a tensor when one tensor is given, else a tuple.
    """

    def __init__(self, *tensors: Tensor, batch_size: int, seed: int = 0) -> None:
        if not tensors:
            raise ConfigError("RandomBatches needs at least one tensor")
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            raise ShapeError(f"RandomBatches tensors must share their first dimension; got {[t.shape[0] for t in tensors]}")
        if not 0 < batch_size <= n:
            raise ConfigError(f"batch_size must be in [1, {n}] (the number of rows), got {batch_size}")
        self.tensors, self.batch_size, self.n = tensors, batch_size, n
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.gen)
        self.pos = 0

    def next_batch(self) -> Tensor | tuple[Tensor, ...]:
        if self.pos + self.batch_size > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen)
            self.pos = 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        out = tuple(t[idx] for t in self.tensors)
        return out[0] if len(out) == 1 else out

    def state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        return ({"kind": "random", "pos": self.pos, "n": self.n},
                {"gen": self.gen.get_state(), "perm": self.perm.clone()})

    def load_state(self, meta: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        _expect_kind(meta, "random")
        if int(meta["n"]) != self.n:
            raise ConfigError(f"checkpoint was made with {meta['n']} rows of data, this run has {self.n}")
        self.gen.set_state(tensors["gen"])
        self.perm = tensors["perm"].clone()
        self.pos = int(meta["pos"])


class ReplayIterator:
    """Wraps a deterministic iterator factory; resume re-creates the iterator and skips consumed batches."""

    def __init__(self, factory: Callable[[], Iterator[Any]]) -> None:
        self.factory = factory
        self.it = factory()
        self.consumed = 0

    def next_batch(self) -> Any:
        try:
            batch = next(self.it)
        except StopIteration:
            raise ConfigError(f"the batch iterator ran out after {self.consumed} batches; "
                              "make it longer (e.g. cycle over epochs) or lower TrainConfig.steps") from None
        self.consumed += 1
        return batch

    def state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        return {"kind": "replay", "consumed": self.consumed}, {}

    def load_state(self, meta: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        _expect_kind(meta, "replay")
        self.it = self.factory()
        self.consumed = 0
        for _ in range(int(meta["consumed"])):
            self.next_batch()


def as_batch_source(data: Any) -> BatchSource:
    """A ``BatchSource`` as is; a zero-argument callable → ``ReplayIterator``; anything else → ``FullBatch``."""
    if isinstance(data, BatchSource):
        return data
    if callable(data) and not isinstance(data, Tensor):
        return ReplayIterator(data)
    if isinstance(data, Iterator):
        raise ConfigError("a bare iterator cannot be resumed exactly; pass a zero-argument factory "
                          "(lambda: make_iterator(...)) or a BatchSource instead")
    return FullBatch(data)


def _expect_kind(meta: dict[str, Any], kind: str) -> None:
    if meta.get("kind") != kind:
        raise ModelFileError(f"checkpoint data state is of kind {meta.get('kind')!r} but this run uses a "
                             f"{kind!r} batch source; resume with the same kind of data")
