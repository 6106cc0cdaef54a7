"""One 2-rank launch serves most distributed tests (process start-up dominates their time)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mechscope.dictionaries.train import Trainer

from . import workers as w
from .launch import run_ranks

N_TOKENS, SHARD_ROWS = 150, 40


@pytest.fixture(scope="package")
def two_rank_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding what one 2-rank launch produced (see the job list)."""
    root = tmp_path_factory.mktemp("two_ranks")
    # inputs prepared by one process: a 4-step checkpoint to resume, and a store for hookpoint training
    Trainer(w.dictionary("topk"), w.trainer_cfg(root / "resume", 8, 2)).fit(iter(w.batches(4)))
    w.source().harvest(root / "store1", N_TOKENS, shard_rows=SHARD_ROWS, progress=False)
    run_ranks(2, w.jobs, [
        ("fit", ("topk", str(root / "topk"), 8)),
        ("fit", ("relu", str(root / "relu"), 8)),
        ("fit", ("batchtopk", str(root / "batchtopk"), 8)),
        ("fit", ("topk", str(root / "resume"), 8, 8, 2)),
        ("harvest", (str(root / "store2"), N_TOKENS, SHARD_ROWS)),
        ("train_hooks", (str(root / "store1"), str(root / "hooks"))),
        ("stream_fit", (str(root / "stream_dp"),)),
        ("stream_fit", (str(root / "stream_btk"), "batchtopk")),
        ("stream_hooks", (str(root / "stream_hooks"),)),
    ])
    return root
