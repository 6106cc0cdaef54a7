"""The estimator's store size is exact (single-process and distributed layouts); runs that cannot fit are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mechscope.activations.sharded import harvest_sharded
from mechscope.errors import ConfigError
from mechscope.experiments.estimate import (
    Estimate,
    check_fits,
    directory_bytes,
    harvest_estimate,
    safetensors_bytes,
    store_bytes,
    train_estimate,
)

from . import workers as w


def test_safetensors_bytes_exact(tmp_path: Path) -> None:
    for shapes in ({"a": (3, 5)}, {"b.x": (1000, 7), "a": (1000, 3, 2)}, {"z": (1,)}):
        for dtype in ("float32", "bfloat16"):
            save_file({k: torch.zeros(s, dtype=getattr(torch, dtype)) for k, s in shapes.items()}, tmp_path / "f")
            assert safetensors_bytes({k: (dtype, s) for k, s in shapes.items()}) == (tmp_path / "f").stat().st_size


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_store_size_exact(tmp_path: Path, dtype: str) -> None:
    src = w.source()
    meta = {"model": "tiny"}
    est = harvest_estimate(src, 150, tmp_path / "one", shard_rows=40, dtype=dtype, metadata=meta, calibrate=False)
    src.harvest(tmp_path / "one", 150, shard_rows=40, dtype=dtype, metadata=meta, progress=False)
    assert est.disk_bytes == directory_bytes(tmp_path / "one") and est.seconds is None
    dist = harvest_estimate(src, 150, tmp_path / "two", shard_rows=40, dtype=dtype, metadata=meta, world_size=1)
    harvest_sharded(src, tmp_path / "two", 150, shard_rows=40, dtype=dtype, metadata=meta, progress=False)
    assert dist.disk_bytes == directory_bytes(tmp_path / "two")
    assert dist.tokens_per_s is not None and dist.tokens_per_s > 0 and dist.seconds is not None
    hooks = src.row_shapes()
    assert store_bytes(hooks, 150, shard_rows=40, dtype=dtype, metadata={}, world_size=2) > \
        store_bytes(hooks, 150, shard_rows=40, dtype=dtype, metadata={})  # receipts and rank fields


def test_refuses_what_cannot_fit(tmp_path: Path) -> None:
    est = train_estimate(w.dictionary("topk"), 10_000, tmp_path, batch_size=32, buffer_rows=128, row_bytes=24)
    assert est.tokens_per_s is not None and est.tokens_per_s > 0 and est.peak_ram_bytes > 0
    assert check_fits(est) is est
    with pytest.raises(ConfigError, match="RAM"):
        check_fits(Estimate("train", 1, 10**15, None, None, 10**12, 10**9))
    with pytest.raises(ConfigError, match="free"):
        check_fits(Estimate("harvest", 10**15, 1, None, None, 10**12, 10**9))
    assert "disk" in est.line() and "tok/s" in est.line()
