"""A 2-rank sharded harvest equals the single-process harvest row for row; a killed rank leaves a store any
world size finishes; incompatible stores are refused; hookpoint-parallel training equals training alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechscope.activations.sharded import harvest_plan, harvest_sharded
from mechscope.activations.store import ActivationStore
from mechscope.dictionaries import io
from mechscope.errors import ConfigError
from mechscope.experiments.dictionaries import train_on_store

from . import workers as w
from .conftest import N_TOKENS, SHARD_ROWS
from .launch import run_ranks


def _rows(path: Path) -> dict[str, torch.Tensor]:
    store = ActivationStore.open(path)
    parts = [store.read_shard(i) for i in range(len(store.manifest["shards"]))]
    return {h: torch.cat([p[h] for p in parts]) for h in store.hooks}


def _same_store(a: Path, b: Path) -> None:
    ra, rb = _rows(a), _rows(b)
    assert ra.keys() == rb.keys()
    for h in ra:
        assert ra[h].shape[0] == N_TOKENS and torch.equal(ra[h], rb[h]), h
    sa, sb = (ActivationStore.open(p).manifest for p in (a, b))
    assert [s["n_rows"] for s in sa["shards"]] == [s["n_rows"] for s in sb["shards"]] == [40, 40, 40, 30]
    assert sa["hooks"] == sb["hooks"] and sa["metadata"]["source"] == sb["metadata"]["source"]


def test_plan() -> None:
    assert harvest_plan(150, 40) == [(0, 40), (40, 40), (80, 40), (120, 30)]


def test_two_rank_harvest_equals_single_process(two_rank_runs: Path) -> None:
    _same_store(two_rank_runs / "store1", two_rank_runs / "store2")
    m = ActivationStore.open(two_rank_runs / "store2").manifest
    assert m["complete"] and [s["rank"] for s in m["shards"]] == [0, 1, 0, 1]  # who wrote what


def test_killed_rank_resumed_with_another_world_size(two_rank_runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    with pytest.raises(Exception):  # noqa: B017  (spawn reports the dead rank)
        run_ranks(2, w.harvest, str(out), N_TOKENS, SHARD_ROWS, 2)  # rank 1 dies writing its 2nd shard
    partial = ActivationStore.open(out)
    assert not partial.complete and partial.n_rows == 0
    receipts = sorted(p.name for p in (out / "progress").glob("*.json"))
    assert "shard-00003.json" not in receipts and "shard-00001.json" in receipts
    harvest_sharded(w.source(), out, N_TOKENS, shard_rows=SHARD_ROWS, progress=False)  # one process finishes
    _same_store(two_rank_runs / "store1", out)
    assert [s["rank"] for s in ActivationStore.open(out).manifest["shards"]][3] == 0  # redone by the new run


def test_incompatible_stores_refused(two_rank_runs: Path, tmp_path: Path) -> None:
    src = w.source()
    with pytest.raises(ConfigError, match="shard_rows"):
        harvest_sharded(src, two_rank_runs / "store1", N_TOKENS + 40, shard_rows=30, progress=False)
    other = w.source()
    other.cfg = type(src.cfg)(seq_len=12, batch_size=5, seed=2)
    with pytest.raises(ConfigError, match="different source"):
        harvest_sharded(other, two_rank_runs / "store1", N_TOKENS, shard_rows=SHARD_ROWS, progress=False)
    partial = tmp_path / "partial"
    st = src.harvest(partial, 100, shard_rows=SHARD_ROWS, progress=False)
    st.manifest["complete"] = False
    io.atomic_write_json(partial / "manifest.json", st.manifest)
    with pytest.raises(ConfigError, match="partial single-process harvest"):
        harvest_sharded(src, partial, N_TOKENS, shard_rows=SHARD_ROWS, progress=False)


def test_extend_finished_store(two_rank_runs: Path, tmp_path: Path) -> None:
    src = w.source()
    out = tmp_path / "grow"
    harvest_sharded(src, out, 80, shard_rows=SHARD_ROWS, progress=False)
    harvest_sharded(src, out, N_TOKENS, shard_rows=SHARD_ROWS, progress=False)
    _same_store(two_rank_runs / "store1", out)


def test_hookpoint_parallel_equals_alone(two_rank_runs: Path, tmp_path: Path) -> None:
    runs = io.read_json(two_rank_runs / "hooks" / "hooks.json")
    assert runs["owner"] == {w.HOOKS[0]: 0, w.HOOKS[1]: 1}
    for h in w.HOOKS:
        alone = train_on_store(two_rank_runs / "store1", tmp_path / h, "topk", hooks=[h], d_sae=16, options={"k": 2},
                               batch_size=16, steps=6, buffer_rows=64, progress=False)
        got = io.load(two_rank_runs / "hooks" / h / "dictionary")
        assert got.cfg.hook_name == h
        for k, v in alone.state_dict().items():
            assert torch.equal(v, got.state_dict()[k]), (h, k)
