"""What a harvest or training run will need, printed before it starts; runs that cannot fit are refused.

* **Store size — exact.** A shard file is a safetensors file whose header is known before a row is
  computed (tensor names, dtype, shape, offsets: :func:`safetensors_bytes` rebuilds it), and the manifest
  (and, for a distributed harvest, the per-shard receipts) is JSON whose content is known too, so
  :func:`store_bytes` is the byte count the directory will hold (a test checks it against real harvests).
* **Peak RAM — a model**: this process's resident peak so far (runtime, loaded model and its load
  transients, measured) plus the sizes that dominate the run: one forward batch's activations, the shard being assembled (twice: it is concatenated before writing); for training the
  dictionary with gradients and two Adam moments, the mixing buffer (three copies while it shuffles) and a
  step's ``[batch d_sae]`` temporaries. It is a model, not a measurement: the docs compare it with ``ru_maxrss``.
* **Tokens/s — measured** by a short calibration on this machine: two timed forward batches of the real
  source (harvest), or three timed optimiser steps of the real dictionary at the real batch size (training).

:func:`check_fits` raises ``ConfigError`` when the store exceeds the free disk or the peak RAM exceeds
the available memory, naming both numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mechscope.errors import ConfigError

_MAX_LISTED = 100_000
_ST_DTYPE = {"float32": ("F32", 4), "float16": ("F16", 2), "bfloat16": ("BF16", 2)}


def safetensors_bytes(tensors: Mapping[str, tuple[str, Sequence[int]]]) -> int:
    """Exact size of a safetensors file (no metadata) holding ``{name: (dtype, shape)}``."""
    order = sorted(tensors, key=lambda n: (-_ST_DTYPE[tensors[n][0]][1], n))
    header: dict[str, Any] = {}
    off = 0
    for name in order:
        code, size = _ST_DTYPE[tensors[name][0]]
        shape = [int(s) for s in tensors[name][1]]
        n = size
        for s in shape:
            n *= s
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    text = json.dumps(header, separators=(",", ":"))
    return 8 + (len(text.encode()) + 7) // 8 * 8 + off


def _json_bytes(obj: Any) -> int:
    return len(json.dumps(obj, indent=1).encode())


def store_bytes(hooks: Mapping[str, Sequence[int]], n_tokens: int, *, shard_rows: int, dtype: str,
                metadata: Mapping[str, Any], world_size: int | None = None) -> int:
    """Bytes a fresh harvest of ``n_tokens`` rows writes: shards + manifest (+ receipts when distributed).

    ``metadata`` is the manifest's metadata (``{"source": ActivationSource.describe() | {...}}``);
    ``world_size`` None means a single-process ``ActivationSource.harvest``, else ``harvest_sharded``.
    Exact up to 100,000 shards; past that the JSON part (a tiny fraction) is extrapolated.
    """
    if dtype not in _ST_DTYPE:
        raise ConfigError(f"store dtype must be one of {sorted(_ST_DTYPE)}, got {dtype!r}")
    n_full, last = divmod(n_tokens, shard_rows)
    total = sum(count * safetensors_bytes({h: (dtype, (n, *shape)) for h, shape in hooks.items()})
                for count, n in ((n_full, shard_rows), (int(last > 0), last)) if count)
    n_shards = n_full + int(last > 0)
    listed = min(n_shards, _MAX_LISTED)  # beyond this many shards the JSON is extrapolated (not exact)
    shards: list[dict[str, Any]] = []
    receipts = 0
    meta = dict(metadata)
    for i in range(listed):
        n = last if (i == n_shards - 1 and last) else shard_rows
        entry: dict[str, Any] = {"file": f"shard-{i:05d}.safetensors", "n_rows": n}
        if world_size is not None:
            entry |= {"rank": i % world_size, "world_size": world_size}
            receipts += _json_bytes({"index": i, **entry})
        shards.append(entry)
    if world_size is not None:
        meta["sharded"] = {"n_tokens": n_tokens, "shard_rows": shard_rows}
    from mechscope.activations.store import FORMAT, FORMAT_VERSION

    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "dtype": dtype, "shard_rows": shard_rows,
                "hooks": {h: [int(s) for s in shape] for h, shape in hooks.items()}, "metadata": meta,
                "shards": shards, "complete": True}
    json_bytes = _json_bytes(manifest) + receipts
    return total + (json_bytes if listed == n_shards else json_bytes * n_shards // max(listed, 1))


def directory_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of every file under ``path`` (what :func:`store_bytes` predicts)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


@dataclass
class Estimate:
    """What a run needs; ``seconds`` is None when no calibration ran."""

    what: str
    disk_bytes: int
    peak_ram_bytes: int
    tokens_per_s: float | None
    seconds: float | None
    free_disk_bytes: int
    available_ram_bytes: int

    def line(self) -> str:
        """One human-readable line (printed to stderr before a run)."""
        gb = 1e9
        t = "not calibrated" if self.seconds is None else \
            f"{self.tokens_per_s:,.0f} tok/s -> ~{self.seconds / 60:.1f} min"
        return (f"estimate [{self.what}]: disk {self.disk_bytes / gb:.3f} GB (free disk {self.free_disk_bytes / gb:.1f} "
                f"GB), peak RAM ~{self.peak_ram_bytes / gb:.2f} GB (available {self.available_ram_bytes / gb:.1f} GB), "
                f"{t}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def available_ram() -> int:
    """``MemAvailable`` from /proc/meminfo (bytes); total physical memory elsewhere."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def free_disk(path: str | os.PathLike[str]) -> int:
    """Free bytes on the filesystem that will hold ``path`` (its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def check_fits(est: Estimate) -> Estimate:
    """Raise ``ConfigError`` if the run cannot fit on this machine (see module docstring)."""
    if est.disk_bytes > est.free_disk_bytes:
        raise ConfigError(f"the store needs {est.disk_bytes / 1e9:.2f} GB but only {est.free_disk_bytes / 1e9:.2f} GB "
                          f"are free; harvest fewer --tokens, use --dtype bfloat16, or write elsewhere")
    if est.peak_ram_bytes > est.available_ram_bytes:
        raise ConfigError(f"the run needs ~{est.peak_ram_bytes / 1e9:.2f} GB of RAM but {est.available_ram_bytes / 1e9:.2f} "
                          f"GB are available; lower --batch-size / --buffer-rows / --shard-rows")
    return est


def announce(est: Estimate, show: bool = True) -> Estimate:
    """Print ``est`` to stderr (when ``show``) and refuse it if it cannot fit (:func:`check_fits`)."""
    import sys

    if show:
        sys.stderr.write(est.line() + "\n")
        sys.stderr.flush()
    return check_fits(est)


def process_peak_rss() -> int:
    """This process's resident-memory peak so far (bytes): the runtime, the loaded model, its load transients."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def harvest_estimate(src: Any, n_tokens: int, out: str | os.PathLike[str], *, shard_rows: int, dtype: str,
                     metadata: Mapping[str, Any] | None = None, world_size: int | None = None,
                     calibrate: bool = True) -> Estimate:
    """Estimate a harvest of ``n_tokens`` rows of ``src`` (an ``ActivationSource``) into ``out``."""
    shapes = src.row_shapes()
    meta = {"source": src.describe() | {"metadata": dict(metadata or {})}}
    size = store_bytes(shapes, n_tokens, shard_rows=shard_rows, dtype=dtype, metadata=meta, world_size=world_size)
    row = sum(_ST_DTYPE[dtype][1] * _numel(s) for s in shapes.values())
    cfg, mcfg = src.cfg, src.model.cfg
    seq = cfg.seq_len
    fwd = cfg.batch_size * seq * (mcfg.d_model * 16 + 2 * getattr(mcfg, "n_heads", 1) * seq) * 4  # residual + attn
    peak = process_peak_rss() + fwd + 2 * (shard_rows + cfg.batch_size * seq) * row
    rate = None
    if calibrate:
        rate = _time_forward(src)
    return Estimate("harvest", size, int(peak), rate, None if rate is None else n_tokens / rate,
                    free_disk(out), available_ram())


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _time_forward(src: Any) -> float:
    """Rows per second of ``src`` over two timed batches after one warm-up batch."""
    bs = src.cfg.batch_size
    if src.n_sequences == 0:
        return float("nan")
    src.activations(src.sequences(0, bs))
    t0, rows = time.perf_counter(), 0
    for k in (1, 2):
        got = src.activations(src.sequences(k * bs % max(src.n_sequences, 1), k * bs % max(src.n_sequences, 1) + bs))
        rows += next(iter(got.values())).shape[0]
    return rows / max(time.perf_counter() - t0, 1e-9)


def train_estimate(dictionary: Any, n_tokens: int, out: str | os.PathLike[str], *, batch_size: int, buffer_rows: int,
                   row_bytes: int, steps: int | None = None, calibrate: bool = True, precision: str = "float32") -> Estimate:
    """Estimate training ``dictionary`` on ``n_tokens`` rows (``steps`` x ``batch_size`` if given)."""
    cfg = dictionary.cfg
    params = sum(p.numel() * p.element_size() for p in dictionary.parameters())
    step_tmp = batch_size * cfg.d_sae * 4 * 4 + batch_size * row_bytes * 4
    read_block = min(8192, max(n_tokens, 1)) * row_bytes * 2
    peak = process_peak_rss() + 4 * params + 3 * max(buffer_rows, 2 * batch_size) * row_bytes + step_tmp + read_block
    tokens = steps * batch_size if steps else n_tokens
    rate = _time_steps(dictionary, batch_size, precision) if calibrate else None
    ckpt = 3 * params  # weights + two Adam moments per checkpoint
    return Estimate("train", ckpt, int(peak), rate, None if rate is None else tokens / rate, free_disk(out),
                    available_ram())


def _time_steps(dictionary: Any, batch_size: int, precision: str) -> float:
    """Rows per second of three optimiser steps of a copy of ``dictionary`` on random rows (after a warm-up)."""
    import copy

    from mechscope.dictionaries.train import Trainer, TrainerConfig

    if getattr(dictionary.cfg, "n_layers", None):
        return float("nan")  # crosscoders read [batch n_layers d]; not calibrated
    d = copy.deepcopy(dictionary)
    tr = Trainer(d, TrainerConfig(total_steps=4, progress=False, precision=precision))
    x = torch.randn(batch_size, d.cfg.d_in)
    target = torch.randn(batch_size, d.cfg.d_output) if d.cfg.d_output != d.cfg.d_in else x
    tr.train_step(x, target)
    t0 = time.perf_counter()
    for _ in range(3):
        tr.train_step(x, target)
    return 3 * batch_size / max(time.perf_counter() - t0, 1e-9)


__all__ = ["Estimate", "announce", "available_ram", "check_fits", "directory_bytes", "free_disk", "harvest_estimate",
           "safetensors_bytes", "store_bytes", "train_estimate"]
