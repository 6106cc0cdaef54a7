"""ActivationStore (sharded, resumable, validated) and the mixing buffer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechscope.activations.buffer import mixing_buffer
from mechscope.activations.store import ActivationStore
from mechscope.errors import ConfigError, ModelFileError, ShapeError

HOOKS = {"blocks.0.hook_resid_post": (4,), "blocks.0.hook_mlp_out": (3,)}


def _rows(start: int, n: int) -> dict[str, torch.Tensor]:
    idx = torch.arange(start, start + n, dtype=torch.float32)[:, None]
    return {"blocks.0.hook_resid_post": idx.expand(n, 4).clone(), "blocks.0.hook_mlp_out": -idx.expand(n, 3).clone()}


def test_store_round_trip_and_batches(tmp_path: Path) -> None:
    s = ActivationStore.create(tmp_path, HOOKS, shard_rows=10, metadata={"model": "tiny"})
    for start in range(0, 25, 7):
        s.append(_rows(start, min(7, 25 - start)))
    s.finish()
    r = ActivationStore.open(tmp_path)
    assert r.n_rows == 25 and r.complete and len(r.manifest["shards"]) == 3
    got = torch.cat(list(r.batches(5, hooks=["blocks.0.hook_resid_post"])))
    torch.testing.assert_close(got[:, 0], torch.arange(25.0))
    pairs = list(r.batches(4, start_row=6))
    assert isinstance(pairs[0], tuple) and pairs[0][0][0, 0] == 6 and pairs[0][1][0, 0] == -6
    assert sum(p[0].shape[0] for p in pairs) == 16  # 19 rows left, the short last batch dropped


def test_store_resume_after_crash(tmp_path: Path) -> None:
    s = ActivationStore.create(tmp_path, HOOKS, shard_rows=10)
    s.append(_rows(0, 15))  # one shard on disk, 5 rows only in memory: "crash" now
    del s
    r = ActivationStore.open(tmp_path)
    assert r.n_rows == 10 and not r.complete
    r.append(_rows(10, 10))
    r.finish()
    got = torch.cat(list(ActivationStore.open(tmp_path).batches(20, hooks=["blocks.0.hook_mlp_out"])))
    torch.testing.assert_close(got[:, 0], -torch.arange(20.0))


def test_store_errors(tmp_path: Path) -> None:
    s = ActivationStore.create(tmp_path, HOOKS, shard_rows=4)
    with pytest.raises(ShapeError, match="expected rows of shape"):
        s.append({"blocks.0.hook_resid_post": torch.zeros(2, 5), "blocks.0.hook_mlp_out": torch.zeros(2, 3)})
    with pytest.raises(ConfigError, match="exactly the hooks"):
        s.append({"blocks.0.hook_resid_post": torch.zeros(2, 4)})
    with pytest.raises(ConfigError, match="already holds"):
        ActivationStore.create(tmp_path, HOOKS)
    s.append(_rows(0, 4))
    shard = tmp_path / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:50])
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        list(ActivationStore.open(tmp_path).batches(2))


def test_mixing_buffer_permutes_without_loss() -> None:
    blocks = [torch.arange(i, i + 10, dtype=torch.float32)[:, None] for i in range(0, 100, 10)]
    out = list(mixing_buffer(iter(blocks), capacity=40, batch_size=8, seed=0))
    seen = torch.cat(out)[:, 0]
    assert all(b.shape == (8, 1) for b in out)
    assert len(set(seen.tolist())) == len(seen) == 96  # no duplicates, only 4 rows dropped at the end
    assert not torch.equal(seen, seen.sort().values)  # shuffled


def test_mixing_buffer_keeps_pairs_aligned() -> None:
    blocks = [(torch.arange(i, i + 10.0)[:, None], -torch.arange(i, i + 10.0)[:, None]) for i in range(0, 60, 10)]
    for x, y in mixing_buffer(iter(blocks), capacity=20, batch_size=5):
        torch.testing.assert_close(x, -y)
    with pytest.raises(ConfigError):
        list(mixing_buffer(iter(blocks), capacity=5, batch_size=5))
