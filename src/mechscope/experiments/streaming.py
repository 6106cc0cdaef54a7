"""Streaming training: activations go straight from the model, through the mixing buffer, into the trainer.

No pre-harvested store is needed (SAELens's default workflow). The model's row blocks are re-cut into the
fixed-size blocks a store read would give (:func:`rechunk`), so streaming over the same token order gives
exactly the batches — and the weights — of training on a store harvested from those tokens with its shards
in order (``train_on_store(..., shuffle_shards=False)``). ``spill`` also writes every streamed row into a
store as ``dict harvest`` would, so a later run can reuse them.

Under ``torchrun`` (a ``Sync`` of several ranks) the forward passes are dealt out: forward batch ``j`` of the
single-process grid runs on rank ``j mod W`` only, and its rows are all-gathered (:func:`model_batches`), so
every rank sees the single-process row stream while running ``1/W`` of the model. Then

* data parallel (:func:`train_streaming` with ``sync``): every rank mixes the same stream and steps on its
  share of each global batch, gradients all-reduced — the weights of one process on the same data order;
* hookpoint parallel (:func:`train_hooks_streaming`): rank ``r`` trains the dictionaries of hooks
  ``r, r + W, ...`` on the full global batches, each exactly as training it alone would.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.distributed import LOCAL, Sync, owned, rank_slices
from mechscope.errors import ConfigError

Rows = Tensor | tuple[Tensor, ...]


def rechunk(blocks: Iterable[Rows], rows: int) -> Iterator[Rows]:
    """Blocks of exactly ``rows`` rows (tensors or aligned tuples); a short final block is dropped."""
    if rows <= 0:
        raise ConfigError(f"rows must be positive, got {rows}")
    carry: list[Tensor] | None = None
    is_tuple = False
    for b in blocks:
        is_tuple = isinstance(b, tuple)
        parts = list(b) if isinstance(b, tuple) else [b]
        carry = parts if carry is None else [torch.cat([c, p]) for c, p in zip(carry, parts)]
        while carry[0].shape[0] >= rows:
            out = tuple(c[:rows] for c in carry)
            carry = [c[rows:] for c in carry]
            yield out if is_tuple else out[0]


def model_batches(src: Any, sync: Sync = LOCAL) -> Iterator[dict[str, Tensor]]:
    """``src.batches()`` in order, forward batch ``j`` computed by rank ``j mod W`` and all-gathered.

    Every rank gets every batch, bit for bit what one process computes (same sequences per forward pass).
    """
    if sync.world_size == 1:
        yield from src.batches()
        return
    bs, w = src.cfg.batch_size, sync.world_size
    n_batches = math.ceil(src.n_sequences / bs)
    empty: dict[str, Tensor] | None = None
    for first in range(0, n_batches, w):
        j = first + sync.rank
        if j < n_batches:
            mine = src.activations(src.sequences(j * bs, (j + 1) * bs))
        else:  # past the end: an empty block of the right shape and dtype
            if empty is None:
                probe = src.activations(src.sequences(0, 1))
                empty = {h: t[:0] for h, t in probe.items()}
            mine = empty
        parts = {h: sync.gather_blocks(mine[h]) for h in src.hooks}
        for r in range(min(w, n_batches - first)):
            yield {h: parts[h][r] for h in src.hooks}


def model_blocks(src: Any, n_tokens: int, *, spill: str | Path | None = None, shard_rows: int = 65536,
                 dtype: str = "float32", metadata: dict[str, Any] | None = None,
                 sync: Sync = LOCAL) -> Iterator[Rows]:
    """The first ``n_tokens`` rows of ``src`` (an ``ActivationSource``) as blocks in ``src.hooks`` order.

    With ``spill`` they are also appended to a new store there (complete once the stream is exhausted; under
    several ranks rank 0 writes it). ``sync``: forward passes dealt over the ranks (:func:`model_batches`).
    """
    from mechscope.activations.store import ActivationStore

    store = None
    if spill is not None and sync.is_writer:
        desc = src.describe() | {"metadata": dict(metadata or {})}
        store = ActivationStore.create(spill, src.row_shapes(), dtype=dtype, shard_rows=shard_rows,
                                       metadata={"source": desc})
    done = 0
    for rows in model_batches(src, sync):
        take = min(n_tokens - done, next(iter(rows.values())).shape[0])
        rows = {h: t[:take] for h, t in rows.items()}
        if store is not None:
            store.append(rows)
        done += take
        out = tuple(rows[h] for h in src.hooks)
        yield out[0] if len(out) == 1 else out
        if done >= n_tokens:
            break
    if done < n_tokens:
        raise ConfigError(f"the token source ran out after {done} of {n_tokens} rows; use a bigger corpus or fewer "
                          f"tokens")
    if store is not None:
        store.finish()


def train_streaming(src: Any, out_dir: str | Path, arch: str, *, n_tokens: int, d_sae: int,
                    options: dict[str, Any] | None = None, hooks: Sequence[str] | None = None,
                    batch_size: int = 4096, steps: int | None = None, lr: float = 4e-4, buffer_rows: int = 2**17,
                    seed: int = 0, progress: bool = True, precision: str = "float32", spill: str | Path | None = None,
                    shard_rows: int = 65536, model_name: str | None = None, estimate: bool = False,
                    sync: Sync = LOCAL) -> Any:
    """Train an ``arch`` dictionary on ``n_tokens`` rows streamed from ``src`` (one pass; resumable).

    ``hooks`` defaults to ``src.hooks`` (which must then be in the order the dictionary reads them). Settings
    mean what they mean for ``train_on_store``; ``spill`` writes the rows to a store as well. A resumed run
    re-streams the rows it already trained on (the forward passes are redone; nothing else is).
    ``estimate``: print what the run needs (spill size exact, peak RAM, model and training tokens/s) first and
    refuse a run that cannot fit. ``sync``: data parallel over its ranks (module docstring); the global batch
    ``batch_size`` must be divisible by the world size.
    """
    from mechscope.dictionaries.train import Trainer
    from mechscope.experiments.dictionaries import dictionary_for, mix, read_block_rows, trainer_config

    names = list(hooks) if hooks else list(src.hooks)
    if names != list(src.hooks):
        raise ConfigError(f"the source streams hooks {src.hooks}; the dictionary reads {names}: build the source "
                          f"with exactly these hooks in this order")
    if arch == "transcoder" and len(names) != 2:
        raise ConfigError(f"a transcoder needs hooks [input, target], got {names}")
    if spill is not None and (Path(spill) / "manifest.json").exists():
        raise ConfigError(f"{spill} already holds a store; spill into a new directory (or train on it with "
                          f"--activations)")
    if batch_size % sync.world_size:
        raise ConfigError(f"--batch-size {batch_size} must be divisible by the world size {sync.world_size}")
    sync.barrier()  # every rank has checked the spill directory before rank 0 creates the store
    shapes = src.row_shapes()
    d = dictionary_for(arch, names, [shapes[h][-1] for h in names], d_sae=d_sae, options=options,
                       model_name=model_name)
    total = steps or max(1, n_tokens // batch_size)
    cfg = trainer_config(total, batch_size, lr=lr, out_dir=out_dir, seed=seed, precision=precision, progress=progress)
    meta = {"model": model_name} if model_name else None
    if estimate:
        from mechscope.experiments.estimate import Estimate, announce, harvest_estimate, train_estimate

        h = harvest_estimate(src, n_tokens, spill or out_dir, shard_rows=shard_rows, dtype="float32", metadata=meta)
        t = train_estimate(d, n_tokens, out_dir, batch_size=batch_size, buffer_rows=max(buffer_rows, 2 * batch_size),
                           row_bytes=4 * sum(shapes[n][-1] for n in names), steps=total, precision=precision)
        rate = None if h.tokens_per_s is None or t.tokens_per_s is None else \
            1 / (1 / h.tokens_per_s + 1 / t.tokens_per_s)  # a forward, then a step, one after the other
        # without a spill no shard is buffered: drop the harvest estimate's two shards of float32 rows
        h_peak = h.peak_ram_bytes - (0 if spill else 2 * shard_rows * 4 * sum(shapes[n][-1] for n in names))
        announce(Estimate("stream", (h.disk_bytes if spill else 0) + t.disk_bytes, h_peak + t.peak_ram_bytes,
                          rate, None if rate is None else total * batch_size / rate, h.free_disk_bytes,
                          h.available_ram_bytes), sync.is_writer)
    stream = model_blocks(src, n_tokens, spill=spill, shard_rows=shard_rows, metadata=meta, sync=sync)
    blocks = rechunk(stream, read_block_rows(n_tokens))
    data = mix(blocks, arch, batch_size, max(buffer_rows, 2 * batch_size), seed)
    trainer = Trainer(d, cfg, sync)
    trainer.fit(rank_slices(data, sync))
    if spill is not None:
        for _ in stream:  # the spilled store holds all n_tokens rows, trained on or not
            pass
    if trainer.step < total:
        raise ConfigError(f"the stream of {n_tokens} rows ran out after {trainer.step} of {total} steps (batch "
                          f"{batch_size}, {math.ceil(total * batch_size / n_tokens)} passes needed); stream more "
                          f"tokens or take fewer steps")
    return trainer.dictionary


def train_hooks_streaming(src: Any, out_dir: str | Path, arch: str, *, n_tokens: int, d_sae: int,
                          options: dict[str, Any] | None = None, batch_size: int = 4096, steps: int | None = None,
                          lr: float = 4e-4, buffer_rows: int = 2**17, seed: int = 0, progress: bool = True,
                          precision: str = "float32", model_name: str | None = None,
                          sync: Sync = LOCAL) -> dict[str, Path]:
    """Hookpoint parallel from the model: one ``arch`` dictionary per hook of ``src``, this rank's hooks only.

    Each rank runs its share of the forward passes; rows of every hook are all-gathered; the rank's trainers
    step in lockstep on full global batches (one mixing buffer over all hooks permutes them alike, so each
    hook's batches are those of streaming that hook alone). Returns ``{hook: run dir}`` of all hooks.
    """
    from mechscope.dictionaries.io import atomic_write_json
    from mechscope.dictionaries.train import Trainer
    from mechscope.experiments.dictionaries import dictionary_for, mix, read_block_rows, trainer_config
    from mechscope.experiments.scale import hook_dir

    names = list(src.hooks)
    sync.agree([names, n_tokens, batch_size, seed], "the hooks, tokens, batch size and seed")
    mine = owned(names, sync)
    shapes = src.row_shapes()
    total = steps or max(1, n_tokens // batch_size)
    trainers = [Trainer(dictionary_for(arch, [h], [shapes[h][-1]], d_sae=d_sae, options=options,
                                       model_name=model_name),
                        trainer_config(total, batch_size, lr=lr, out_dir=hook_dir(out_dir, h), seed=seed,
                                       precision=precision, progress=progress and i == 0))
                for i, h in enumerate(mine)]
    stream = model_blocks(src, n_tokens, sync=sync)
    data = mix(rechunk(stream, read_block_rows(n_tokens)), "sae", batch_size, max(buffer_rows, 2 * batch_size), seed)
    tuples = (b if isinstance(b, tuple) else (b,) for b in data)
    copies = itertools.tee(tuples, len(mine))  # trainers advance together: the tee holds a few batches at most
    runs = [t.fit_steps(map(operator.itemgetter(names.index(h)), c)) for t, h, c in zip(trainers, mine, copies)]
    while runs:
        runs = [r for r in runs if next(r, None) is not None]
    for _ in stream:  # every rank takes part in every all-gather, however far its own trainers read
        pass
    short = [h for t, h in zip(trainers, mine) if t.step < total]
    if short:
        raise ConfigError(f"the stream of {n_tokens} rows ran out before {total} steps for {short}; stream more "
                          f"tokens or take fewer steps")
    sync.barrier()
    out = {h: hook_dir(out_dir, h) for h in names}
    if sync.is_writer:
        atomic_write_json(Path(out_dir) / "hooks.json", {"arch": arch, "world_size": sync.world_size, "source": "model",
                                                         "runs": {h: p.name for h, p in out.items()},
                                                         "owner": {h: i % sync.world_size for i, h in enumerate(names)}})
    return out


__all__ = ["model_batches", "model_blocks", "rechunk", "train_hooks_streaming", "train_streaming"]
