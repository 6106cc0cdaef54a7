"""Mixing (shuffle) buffer: decorrelate consecutive activation batches before training.

Activations harvested from a model arrive in document order, so neighbouring tokens are strongly
correlated. The buffer keeps up to ``capacity`` rows, shuffles them whenever it is full, hands out the
first half as batches and keeps the second half to mix with new rows (as SAELens's mixing buffer does).
Batches may be tensors or tuples of aligned tensors (``(input, target)`` pairs for transcoders); every
tensor of a tuple is permuted identically.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from mechscope.errors import ConfigError, ShapeError

Rows = Tensor | tuple[Tensor, ...]


def _as_tuple(batch: Rows) -> tuple[Tensor, ...]:
    return batch if isinstance(batch, tuple) else (batch,)


def mixing_buffer(batches: Iterable[Rows], *, capacity: int, batch_size: int, seed: int = 0,
                  mix_fraction: float = 0.5) -> Iterator[Rows]:
    """Yield shuffled batches of exactly ``batch_size`` rows (a short last batch is dropped).

    Args:
        batches: source of row blocks (any size), tensors or tuples of tensors with equal first dims.
        capacity: rows held before each shuffle (memory ~ capacity * row bytes); >= 2 * batch_size.
        batch_size: rows per yielded batch.
        seed: shuffling seed.
        mix_fraction: fraction of the buffer kept back after each shuffle to mix with new data.
    """
    if batch_size <= 0 or capacity < 2 * batch_size:
        raise ConfigError(f"need batch_size > 0 and capacity >= 2 * batch_size, got {batch_size}, {capacity}")
    if not 0 <= mix_fraction < 1:
        raise ConfigError(f"mix_fraction must be in [0, 1), got {mix_fraction}")
    gen = torch.Generator().manual_seed(seed)
    store: list[Tensor] | None = None
    tuple_input = False
    keep = int(capacity * mix_fraction)
    for block in batches:
        tuple_input = isinstance(block, tuple)
        parts = _as_tuple(block)
        if len({p.shape[0] for p in parts}) != 1:
            raise ShapeError(f"tensors of one batch must have equal first dims, got {[p.shape for p in parts]}")
        store = list(parts) if store is None else [torch.cat([s, p]) for s, p in zip(store, parts)]
        while store[0].shape[0] >= capacity:
            perm = torch.randperm(store[0].shape[0], generator=gen)
            store = [s[perm] for s in store]
            n_out = (store[0].shape[0] - keep) // batch_size * batch_size
            for i in range(0, n_out, batch_size):
                out = tuple(s[i:i + batch_size] for s in store)
                yield out if tuple_input else out[0]
            store = [s[n_out:] for s in store]
    if store is not None and store[0].shape[0] >= batch_size:
        perm = torch.randperm(store[0].shape[0], generator=gen)
        store = [s[perm] for s in store]
        for i in range(0, store[0].shape[0] // batch_size * batch_size, batch_size):
            out = tuple(s[i:i + batch_size] for s in store)
            yield out if tuple_input else out[0]


__all__ = ["mixing_buffer"]
