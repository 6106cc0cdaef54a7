"""Real SIGKILLs at chosen points of every writer (``MECHSCOPE_CRASH_AT``), then a resume: no torn file,
and the result equals an uninterrupted run's. The full matrix of points is ``benchmarks/crash_harness.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.safety import writers

SCRIPT = Path(writers.__file__)

KILLS = [
    ("dict_train", "dict_checkpoint.before_prune@2"),  # keep_checkpoints=1: old and new both on disk
    ("train", "train_checkpoint.before_pointer@1"),  # first checkpoint published, no `latest` pointer yet
    ("train", "train.after_update@1"),  # killed before any checkpoint: --resume restarts it in place
    ("harvest", "harvest.before_finish"),  # every shard written, complete never set
    ("harvest", "store.before_manifest@2"),  # a shard on disk that the manifest does not list yet
    ("dict_save", "publish_dir.between_renames"),  # old dictionary renamed aside, new one not yet in place
    ("model_save", "write_dir.before_publish@2"),
]


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ref")
    for name in {k[0] for k in KILLS}:
        writers.SCENARIOS[name](root / name)
    return {name: root / name for name in writers.SCENARIOS}


def _check_resume(scenario: str, out: Path, ref: Path) -> None:
    assert writers.torn_files(out) == []  # right after the kill
    writers.SCENARIOS[scenario](out)  # resume (no --overwrite, nothing deleted by hand)
    assert writers.torn_files(out) == []
    assert writers.compare(scenario, out, ref) == []


def test_sigkill_in_a_fresh_interpreter_then_resume(tmp_path: Path, references: dict[str, Path]) -> None:
    """A separate ``python`` process (nothing shared with this one) killed after logging step 3."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "dict_train", str(out)], capture_output=True, text=True,
                          env={**os.environ, "MECHSCOPE_CRASH_AT": "dict_trainer.after_step@3"}, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]  # the crash point was reached
    _check_resume("dict_train", out, references["dict_train"])


@pytest.mark.parametrize(("scenario", "point"), KILLS, ids=[f"{s}-{p}" for s, p in KILLS])
def test_sigkill_then_resume(scenario: str, point: str, tmp_path: Path, references: dict[str, Path]) -> None:
    """A forked child process SIGKILLed by the kernel at the crash point."""
    out = tmp_path / "out"
    status = writers._killed_child(scenario, out, point)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL  # the crash point was reached
    _check_resume(scenario, out, references[scenario])


@pytest.mark.slow
def test_every_crash_point_of_every_writer_survives() -> None:
    """The harness (benchmarks/crash_harness.py): every hit of every crash point, in forked children."""
    report = writers.harness()
    assert all(r["failures"] == [] for r in report.values()), report
    assert sum(int(r["kills_tried"]) for r in report.values()) >= 80  # the matrix really ran
    assert all(r["kills_survived"] == r["kills_tried"] and r["torn_files_after_kill"] == 0 for r in report.values())
