"""One writer per directory: a second writer gets ``LockedError`` naming the holder's PID; temporaries are unique."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mechscope.activations.source import ActivationSource, SourceConfig
from mechscope.dictionaries.topk import TopKConfig, TopKDictionary
from mechscope.dictionaries.train import Trainer, TrainerConfig
from mechscope.errors import LockedError
from mechscope.io_safety import LOCK_FILE, DirLock, dir_lock, lock_holder
from mechscope.models.transformer import HookedTransformer
from mechscope.train import TrainConfig, train
from mechscope.train import checkpoint as ck
from tests.conftest import tiny_cfg

HOLDER = """
import sys
from mechscope.io_safety import dir_lock
with dir_lock(sys.argv[1], "test holder"):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def _train(run: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 4)
    train(nn.Linear(4, 2), lambda m, b: m(b).pow(2).mean(), x, TrainConfig(steps=2, progress=False), run)


def test_second_process_gets_the_holders_pid(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=rf"PID {proc.pid}\b.*test holder"):
            _train(run)
        assert lock_holder(run)["pid"] == proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(timeout=60)
    _train(run)  # released by the holder's exit
    assert (run / "checkpoints" / "latest").is_file() and (run / LOCK_FILE).read_text() == ""


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    proc.kill()
    proc.wait(timeout=60)
    with DirLock(tmp_path, "after the kill"):  # no stale lock
        assert lock_holder(tmp_path)["what"] == "after the kill"


def test_dictionary_training_and_harvest_refuse_a_locked_directory(tmp_path: Path) -> None:
    sae = TopKDictionary(TopKConfig(d_in=8, d_sae=16, k=2))
    model = HookedTransformer(tiny_cfg("llama"), seed=0).eval()
    src = ActivationSource(model, ["blocks.0.hook_resid_post"], torch.randint(0, 50, (4, 6)), SourceConfig())
    with dir_lock(tmp_path / "d", "someone"), dir_lock(tmp_path / "s", "someone"):
        with pytest.raises(LockedError, match="this process"):
            Trainer(sae, TrainerConfig(total_steps=2, out_dir=str(tmp_path / "d"), progress=False)).fit(
                [torch.randn(4, 8)] * 2)
        with pytest.raises(LockedError, match="someone"):
            src.harvest(tmp_path / "s", 10, progress=False)
    Trainer(sae, TrainerConfig(total_steps=2, out_dir=str(tmp_path / "d"), progress=False)).fit([torch.randn(4, 8)] * 2)
    assert src.harvest(tmp_path / "s", 10, progress=False).complete


def test_temporaries_are_unique_per_save(tmp_path: Path) -> None:
    """A save started while another save of the same file is in flight does not clobber its temporary."""
    target = tmp_path / "f.json"

    def outer(p: Path) -> None:
        p.write_text("A" * 1000)
        ck.atomic_write(target, lambda q: q.write_text("B"))  # a second writer of the same file, mid-save

    ck.atomic_write(target, outer)
    assert target.read_text() == "A" * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]
