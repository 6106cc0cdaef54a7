"""``ActivationStore``: harvested activations on disk, sharded, so one harvest serves many trainings.

A store is a directory with ``manifest.json`` and shards ``shard-NNNNN.safetensors``. Each shard holds
one tensor per hook name (``[n_rows, *shape]``, rows aligned across hooks: row i of every hook comes from
the same token). The manifest records the format version, the hooks with their shapes and dtype, free
metadata (model, corpus, ...), the shards with their row counts, and ``complete``.

Writing is append-only and resumable: rows are buffered and written as a shard once ``shard_rows`` are
collected; the shard file is written atomically (tmp + fsync + rename) *before* the manifest is
atomically replaced to include it. After a crash, reopening gives exactly the rows of the listed shards
(``n_rows``), so a harvester skips that many tokens and continues; an unlisted partial shard is ignored
and overwritten. Reading validates every shard against the manifest and raises ``ModelFileError``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.dictionaries.io import atomic_save_tensors, atomic_write_json, read_json, read_tensors
from mechscope.errors import ConfigError, ModelFileError, ShapeError
from mechscope.io_safety import crash_point

FORMAT, FORMAT_VERSION, MANIFEST = "mechscope.activations", 1, "manifest.json"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _check_manifest(m: dict[str, Any], where: Path) -> None:
    """Raise ``ModelFileError`` naming the first manifest field that is missing or of the wrong type."""

    def bad(field: str, wanted: str) -> ModelFileError:
        return ModelFileError(f"{where}: field {field!r} must be {wanted}, got {m.get(field)!r} "
                              "(a damaged manifest; re-harvest or restore it)")

    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not isinstance(m.get("dtype"), str) or m["dtype"] not in _DTYPES:
        raise bad("dtype", f"one of {sorted(_DTYPES)}")
    if not count(m.get("shard_rows")) or not m["shard_rows"]:
        raise bad("shard_rows", "a positive int")
    hooks = m.get("hooks")
    if not isinstance(hooks, dict) or not hooks or not all(
            isinstance(k, str) and isinstance(v, list) and all(count(x) for x in v) for k, v in hooks.items()):
        raise bad("hooks", "an object mapping hook names to row shapes (lists of ints)")
    shards = m.get("shards")
    if not isinstance(shards, list) or not all(
            isinstance(s, dict) and isinstance(s.get("file"), str) and count(s.get("n_rows")) for s in shards):
        raise bad("shards", "a list of {file, n_rows} objects")
    if not isinstance(m.get("complete"), bool):
        raise bad("complete", "true or false")
    if not isinstance(m.get("metadata", {}), dict):
        raise bad("metadata", "an object")


class ActivationStore:
    """A sharded activation store; create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self._pending: dict[str, list[Tensor]] = {h: [] for h in manifest["hooks"]}
        self._pending_rows = 0

    # -- opening ----------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], hooks: Mapping[str, Sequence[int]], *, dtype: str = "float32",
               shard_rows: int = 65536, metadata: Mapping[str, Any] | None = None) -> ActivationStore:
        """New empty store for ``hooks`` (name -> per-row shape, e.g. ``{"blocks.3.hook_resid_post": (576,)}``)."""
        root = Path(path)
        if (root / MANIFEST).exists():
            raise ConfigError(f"{root} already holds an activation store; use ActivationStore.open to append")
        if dtype not in _DTYPES or shard_rows <= 0 or not hooks:
            raise ConfigError(f"need dtype in {sorted(_DTYPES)}, shard_rows > 0 and at least one hook; "
                              f"got {dtype!r}, {shard_rows}, {list(hooks)}")
        root.mkdir(parents=True, exist_ok=True)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "dtype": dtype, "shard_rows": shard_rows,
                    "hooks": {h: [int(s) for s in shape] for h, shape in hooks.items()},
                    "metadata": dict(metadata or {}), "shards": [], "complete": False}
        atomic_write_json(root / MANIFEST, manifest)
        return cls(root, manifest)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ActivationStore:
        """Open an existing store (to read, or to append more rows)."""
        root = Path(path)
        manifest = read_json(root / MANIFEST)
        version = manifest.get("format_version", 99)
        if manifest.get("format") != FORMAT or not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelFileError(f"{root / MANIFEST}: not a mechscope activation store of version <= "
                                 f"{FORMAT_VERSION} (format={manifest.get('format')!r})")
        _check_manifest(manifest, root / MANIFEST)
        return cls(root, manifest)

    # -- facts ------------------------------------------------------------------------------------------
    @property
    def hooks(self) -> list[str]:
        return list(self.manifest["hooks"])

    @property
    def n_rows(self) -> int:
        """Rows safely on disk (listed in the manifest)."""
        return sum(s["n_rows"] for s in self.manifest["shards"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    # -- writing ----------------------------------------------------------------------------------------
    def append(self, rows: Mapping[str, Tensor]) -> None:
        """Add aligned rows for every hook; shards are written as they fill."""
        if set(rows) != set(self.hooks):
            raise ConfigError(f"append needs exactly the hooks {self.hooks}, got {sorted(rows)}")
        n = {t.shape[0] for t in rows.values()}
        if len(n) != 1:
            raise ShapeError(f"all hooks must have the same number of rows, got { {h: t.shape[0] for h, t in rows.items()} }")
        for h, t in rows.items():
            want = tuple(self.manifest["hooks"][h])
            if tuple(t.shape[1:]) != want:
                raise ShapeError(f"{h}: expected rows of shape {want}, got {tuple(t.shape[1:])}")
            self._pending[h].append(t.detach().to("cpu", _DTYPES[self.manifest["dtype"]]))
        self._pending_rows += n.pop()
        while self._pending_rows >= self.manifest["shard_rows"]:
            self._write_shard(self.manifest["shard_rows"])

    def flush(self) -> None:
        """Write any buffered rows as a (smaller) shard."""
        if self._pending_rows:
            self._write_shard(self._pending_rows)

    def finish(self) -> None:
        """Flush and mark the store complete."""
        self.flush()
        self.manifest["complete"] = True
        atomic_write_json(self.path / MANIFEST, self.manifest)

    def _write_shard(self, n: int) -> None:
        cat = {h: torch.cat(parts) for h, parts in self._pending.items()}
        name = f"shard-{len(self.manifest['shards']):05d}.safetensors"
        atomic_save_tensors(self.path / name, {h: t[:n] for h, t in cat.items()})
        crash_point("store.before_manifest")
        self.manifest["shards"].append({"file": name, "n_rows": n})
        atomic_write_json(self.path / MANIFEST, self.manifest)
        self._pending = {h: [t[n:]] if t.shape[0] > n else [] for h, t in cat.items()}
        self._pending_rows -= n

    # -- reading ----------------------------------------------------------------------------------------
    def read_shard(self, i: int) -> dict[str, Tensor]:
        """Tensors of shard ``i``, validated against the manifest."""
        entry = self.manifest["shards"][i]
        tensors = read_tensors(self.path / entry["file"])
        for h, shape in self.manifest["hooks"].items():
            t = tensors.get(h)
            if t is None or tuple(t.shape) != (entry["n_rows"], *shape):
                got = None if t is None else tuple(t.shape)
                raise ModelFileError(f"{self.path / entry['file']}: {h} should be {(entry['n_rows'], *shape)}, "
                                     f"got {got}; the store is corrupted (re-harvest this shard)")
        return tensors

    def batches(self, batch_size: int, *, hooks: Sequence[str] | None = None, shuffle_shards: bool = False,
                seed: int = 0, start_row: int = 0, epochs: int = 1) -> Iterator[Tensor | tuple[Tensor, ...]]:
        """Batches of ``batch_size`` rows: a tensor for one hook, a tuple for several (in ``hooks`` order).

        ``start_row`` skips rows (resuming a training run); ``shuffle_shards`` permutes the shard order
        (use ``activations.buffer.mixing_buffer`` to shuffle rows).
        """
        names = list(hooks) if hooks is not None else self.hooks
        unknown = [h for h in names if h not in self.manifest["hooks"]]
        if unknown:
            raise ConfigError(f"hooks {unknown} are not in this store; it has {self.hooks}")
        gen = torch.Generator().manual_seed(seed)
        carry: list[Tensor] | None = None
        skip = start_row
        for _ in range(epochs):
            order = torch.randperm(len(self.manifest["shards"]), generator=gen).tolist() if shuffle_shards \
                else range(len(self.manifest["shards"]))
            for i in order:
                n_rows = self.manifest["shards"][i]["n_rows"]
                if skip >= n_rows:
                    skip -= n_rows
                    continue
                data = self.read_shard(i)
                parts = [data[h][skip:] for h in names]
                skip = 0
                carry = parts if carry is None else [torch.cat([c, p]) for c, p in zip(carry, parts)]
                while carry[0].shape[0] >= batch_size:
                    out = tuple(c[:batch_size] for c in carry)
                    carry = [c[batch_size:] for c in carry]
                    yield out[0] if len(out) == 1 else out


__all__ = ["ActivationStore"]
