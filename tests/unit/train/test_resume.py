"""A run SIGKILLed mid-update or mid-checkpoint and resumed ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mechscope.train import list_checkpoints, read_metrics

SCRIPT = Path(__file__).with_name("resume_script.py")


def _run(run_dir: Path, *extra: str) -> int:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(run_dir), *extra], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode not in (0, -9):
        raise AssertionError(proc.stderr[-3000:])
    return proc.returncode


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ref")
    assert _run(d) == 0
    return d


def _final(run_dir: Path) -> dict:
    step, path = list_checkpoints(run_dir)[-1]
    assert step == 40
    return load_file(str(path / "model.safetensors"))


def _strip(recs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall"} for r in recs]


@pytest.mark.parametrize("kill", [["--kill-in-step", "23"], ["--kill-in-checkpoint", "30"]])
def test_sigkill_then_resume_is_bit_identical(reference: Path, tmp_path: Path, kill: list[str]) -> None:
    assert _run(tmp_path, *kill) == -9  # really killed
    steps = [s for s, _ in list_checkpoints(tmp_path)]
    assert steps == [10, 20]  # the checkpoint being written when killed was never published
    assert not any(p.name.startswith("step_00000030") for p in (tmp_path / "checkpoints").iterdir())
    assert _run(tmp_path, "--resume") == 0
    ref, got = _final(reference), _final(tmp_path)
    assert ref.keys() == got.keys()
    for k in ref:
        assert ref[k].dtype == got[k].dtype and bool((ref[k] == got[k]).all()), k  # bit-identical
    assert _strip(read_metrics(tmp_path)) == _strip(read_metrics(reference))
