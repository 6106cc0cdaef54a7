"""Harvest by shard index: many ranks write one store, each shard a pure function of its index.

Shard ``i`` of a store holds rows ``[i * shard_rows, (i+1) * shard_rows)`` of the row stream a
single-process :meth:`ActivationSource.harvest` produces (the last shard is shorter). Which sequence and
offset that row range starts at is known from the tokens alone (:func:`row_index`, no forward pass), so
any rank can produce any shard, and ranks split the shard indices round-robin. Forward passes always run
on the single-process batch grid (sequences ``[k*batch, (k+1)*batch)``), so every row is computed in the
same batch as a single-process harvest computes it: the store equals it row for row, bit for bit.

Bookkeeping needs no shared writes: a rank writes ``shard-NNNNN.safetensors`` atomically and then its
receipt ``progress/shard-NNNNN.json`` (index, rows, rank, world size). A rerun — with any world size —
skips every shard with a receipt and deals out the rest; at the end rank 0 merges the receipts into
``manifest.json`` (shards in index order, each with the rank that wrote it) and marks it complete.
Killing any rank at any moment leaves only whole shards with receipts, or shards without one (redone).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.activations.source import ActivationSource
from mechscope.activations.store import MANIFEST, ActivationStore
from mechscope.dictionaries.io import atomic_save_tensors, atomic_write_json, read_json
from mechscope.distributed import LOCAL, Sync
from mechscope.errors import ConfigError

PROGRESS = "progress"


def row_index(src: ActivationSource, n_rows: int) -> Tensor:
    """Int64 ``[n_seq + 1]``: cumulative kept rows before each sequence, up to the one reaching ``n_rows``."""
    counts, seen, step = [torch.zeros(1, dtype=torch.int64)], 0, 4096
    for start in range(0, src.n_sequences, step):
        c = src.keep_mask(src.sequences(start, start + step)).sum(1)
        counts.append(c)
        seen += int(c.sum())
        if seen >= n_rows:
            break
    if seen < n_rows:
        raise ConfigError(f"the token source yields only {seen} rows, fewer than the {n_rows} asked for; use a "
                          f"bigger corpus or fewer tokens")
    return torch.cat(counts).cumsum(0)


def harvest_plan(n_tokens: int, shard_rows: int) -> list[tuple[int, int]]:
    """``(first_row, n_rows)`` of every shard of an ``n_tokens`` harvest."""
    return [(s, min(shard_rows, n_tokens - s)) for s in range(0, n_tokens, shard_rows)]


def shard_rows_of(src: ActivationSource, cum: Tensor, first: int, n: int) -> dict[str, Tensor]:
    """Rows ``[first, first + n)`` of the single-process stream, computed on its batch grid."""
    seq = int(torch.searchsorted(cum, torch.tensor(first), right=True)) - 1
    bs = src.cfg.batch_size
    start = seq // bs * bs
    skip = first - int(cum[start])
    got: dict[str, list[Tensor]] = {h: [] for h in src.hooks}
    have = 0
    for rows in src.batches(start):
        m = next(iter(rows.values())).shape[0]
        lo, hi = min(skip, m), min(m, skip + n - have)
        for h, t in rows.items():
            got[h].append(t[lo:hi])
        have += hi - lo
        skip = max(skip - m, 0)
        if have >= n:
            break
    return {h: torch.cat(v) for h, v in got.items()}


def _receipts(root: Path) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for p in sorted((root / PROGRESS).glob("shard-*.json")):
        r = read_json(p)
        if (root / r["file"]).is_file():
            out[int(r["index"])] = r
    return out


def _open_or_create(src: ActivationSource, root: Path, desc: dict[str, Any], plan: dict[str, Any], dtype: str,
                    sync: Sync) -> ActivationStore:
    """Rank 0 creates (or checks) the manifest; every rank then opens it and checks it."""
    if sync.is_writer and not (root / MANIFEST).exists():
        ActivationStore.create(root, src.row_shapes(), dtype=dtype, shard_rows=plan["shard_rows"],
                               metadata={"source": desc, "sharded": plan})
    sync.barrier()
    store = ActivationStore.open(root)
    meta = store.manifest["metadata"]
    if meta.get("source") != desc:
        raise ConfigError(f"{root} holds a harvest of a different source ({meta.get('source')}); use another "
                          f"--out directory or delete it")
    if store.manifest["dtype"] != dtype or store.manifest["shard_rows"] != plan["shard_rows"]:
        raise ConfigError(f"{root} was written with dtype={store.manifest['dtype']} shard_rows="
                          f"{store.manifest['shard_rows']}, this run asks dtype={dtype} shard_rows={plan['shard_rows']}; "
                          f"rerun with the store's settings or use another --out")
    old = meta.get("sharded")
    if old is None and store.manifest["shards"] and not store.complete:
        raise ConfigError(f"{root} is a partial single-process harvest; finish it without torchrun (or delete it) "
                          f"— its shard layout is not the indexed one a distributed harvest writes")
    if old is not None and old.get("n_tokens") != plan["n_tokens"] and not store.complete:
        raise ConfigError(f"{root} is a partial distributed harvest of {old.get('n_tokens')} tokens; rerun with "
                          f"--tokens {old.get('n_tokens')} to finish it (it can then be extended)")
    return store


def harvest_sharded(src: ActivationSource, path: str | os.PathLike[str], n_tokens: int, *, sync: Sync = LOCAL,
                    shard_rows: int = 65536, dtype: str = "float32", metadata: dict[str, Any] | None = None,
                    progress: bool = True) -> ActivationStore:
    """Write ``n_tokens`` rows per hook into ``path``, this rank's share of the shards (see module docstring).

    Every rank must call it with the same arguments (checked). Returns the store (complete on return: the
    ranks meet at a barrier and rank 0 writes the merged manifest before anyone returns).
    """
    from tqdm.auto import tqdm

    if n_tokens <= 0 or shard_rows <= 0:
        raise ConfigError(f"n_tokens and shard_rows must be positive, got {n_tokens}, {shard_rows}")
    root = Path(path)
    desc = src.describe() | {"metadata": dict(metadata or {})}
    sync.agree([n_tokens, shard_rows, dtype, str(root.resolve())], "the harvest settings (tokens, shard rows, "
               "dtype, output directory)")
    plan = {"n_tokens": n_tokens, "shard_rows": shard_rows}
    store = _open_or_create(src, root, desc, plan, dtype, sync)
    if store.complete and store.n_rows >= n_tokens:
        return store
    if store.complete:  # extending a finished store: its shards become receipts, new ones follow
        _receipts_from_manifest(root, store, sync)
    shards = harvest_plan(n_tokens, shard_rows)
    if store.complete and store.n_rows % shard_rows:
        raise ConfigError(f"{root} ends in a partial shard ({store.n_rows} rows, shard_rows={shard_rows}); it "
                          f"cannot be extended by index; harvest into a new directory")
    done = _receipts(root)
    todo = [i for i in range(len(shards)) if i not in done]
    mine = todo[sync.rank::sync.world_size]
    cum = row_index(src, n_tokens) if mine else torch.zeros(1, dtype=torch.int64)
    (root / PROGRESS).mkdir(exist_ok=True)
    bar = tqdm(total=len(mine), unit="shard", desc=f"harvest rank {sync.rank}", disable=not progress)
    cast = getattr(torch, dtype)
    for i in mine:
        first, n = shards[i]
        rows = shard_rows_of(src, cum, first, n)
        name = f"shard-{i:05d}.safetensors"
        atomic_save_tensors(root / name, {h: t.to(cast) for h, t in rows.items()})
        atomic_write_json(root / PROGRESS / f"shard-{i:05d}.json",
                          {"index": i, "file": name, "n_rows": n, "rank": sync.rank, "world_size": sync.world_size})
        bar.update(1)
    bar.close()
    sync.barrier()
    if sync.is_writer:
        done = _receipts(root)
        missing = [i for i in range(len(shards)) if i not in done]
        if missing:
            raise ConfigError(f"shards {missing[:10]} of {root} have no receipt after every rank finished; rerun "
                              f"the harvest to redo them")
        store.manifest["shards"] = [{"file": done[i]["file"], "n_rows": int(done[i]["n_rows"]),
                                     "rank": int(done[i]["rank"]), "world_size": int(done[i]["world_size"])}
                                    for i in range(len(shards))]
        store.manifest["metadata"]["sharded"] = plan
        store.manifest["complete"] = True
        atomic_write_json(root / MANIFEST, store.manifest)
    sync.barrier()
    return ActivationStore.open(root)


def _receipts_from_manifest(root: Path, store: ActivationStore, sync: Sync) -> None:
    """Write receipts for the shards a finished manifest lists (so an extension keeps them)."""
    if sync.is_writer:
        (root / PROGRESS).mkdir(exist_ok=True)
        for i, s in enumerate(store.manifest["shards"]):
            p = root / PROGRESS / f"shard-{i:05d}.json"
            if not p.exists():
                atomic_write_json(p, {"index": i, "file": s["file"], "n_rows": s["n_rows"],
                                      "rank": s.get("rank", 0), "world_size": s.get("world_size", 1)})
    sync.barrier()


__all__ = ["harvest_plan", "harvest_sharded", "row_index", "shard_rows_of"]
