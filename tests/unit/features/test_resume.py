"""A harvest killed with SIGKILL and rerun gives exactly the database an uninterrupted run gives; readers
keep working (and never see half a dictionary) while a harvest writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mechscope.features.db import FeatureDB
from tests.unit.features import harvest_proc

ROOT = Path(__file__).resolve().parents[3]


def _proc(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT}", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "tests.unit.features.harvest_proc", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("kill_at", [3])
def test_kill_and_resume_gives_the_same_database(tmp_path, kill_at):
    harvest_proc.run(str(tmp_path / "ref.db"), str(tmp_path / "ref-state"))
    ref = FeatureDB.open(tmp_path / "ref.db", read_only=True).dump()
    p = _proc(str(tmp_path / "b.db"), str(tmp_path / "b-state"), str(kill_at))
    _, err = p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL, err.decode()[-2000:]
    db = FeatureDB.open(tmp_path / "b.db", read_only=True)
    assert db.count("features") == 0 and db.runs()[0]["status"] == "running"
    done_before = db.runs()[0]["tokens_done"]
    assert done_before == (kill_at // 2) * 2 * 4 * (harvest_proc.SEQ - 1)  # last checkpoint: batch 2 or 4
    summary = harvest_proc.run(str(tmp_path / "b.db"), str(tmp_path / "b-state"))
    assert summary["n_tokens"] == harvest_proc.N_SEQ * (harvest_proc.SEQ - 1)
    got = FeatureDB.open(tmp_path / "b.db", read_only=True).dump()
    assert got == ref
    assert len(got["examples"]) > 0 and len(got["features"]) == 24
    # running it again is a no-op (nothing duplicated)
    harvest_proc.run(str(tmp_path / "b.db"), str(tmp_path / "b-state"))
    assert FeatureDB.open(tmp_path / "b.db", read_only=True).dump() == ref


def test_readers_work_while_a_harvest_writes(tmp_path):
    path = tmp_path / "c.db"
    FeatureDB.open(path).close()  # create the schema first so the reader can open it at once
    reader = FeatureDB.open(path, read_only=True)
    p = _proc(str(path), str(tmp_path / "c-state"))
    seen_running = seen_done = 0
    while True:
        finished = p.poll() is not None
        reader.execute("BEGIN")  # one snapshot for the three counts
        n_feat = reader.count("features")
        n_ex = reader.count("examples")
        status = [r["status"] for r in reader.runs()]
        reader.execute("COMMIT")
        assert n_feat in (0, 24), n_feat  # never half a dictionary
        assert (n_feat == 0) == (n_ex == 0)
        seen_running += status == ["running"]
        seen_done += status == ["done"]
        if finished:
            break
        time.sleep(0.01)
    assert p.returncode == 0, p.stderr.read().decode()[-2000:] if p.stderr else ""
    assert seen_done >= 1 and seen_running >= 1


@pytest.mark.parametrize("point", ["write_dir.before_publish@2", "publish_dir.between_renames@1"])
def test_kill_inside_a_checkpoint_write_then_resume_gives_the_same_database(tmp_path, point):
    """Killed while a checkpoint is being written (new one built, not yet published; old one moved aside),
    the rerun resumes from a consistent state and position: no batch folded twice, none lost."""
    harvest_proc.run(str(tmp_path / "ref.db"), str(tmp_path / "ref-state"))
    ref = FeatureDB.open(tmp_path / "ref.db", read_only=True).dump()
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT}", OMP_NUM_THREADS="1",
               MECHSCOPE_CRASH_AT=point)
    p = subprocess.run([sys.executable, "-m", "tests.unit.features.harvest_proc", str(tmp_path / "b.db"),
                        str(tmp_path / "b-state")], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-2000:]
    summary = harvest_proc.run(str(tmp_path / "b.db"), str(tmp_path / "b-state"))
    assert summary["n_tokens"] == harvest_proc.N_SEQ * (harvest_proc.SEQ - 1)
    assert FeatureDB.open(tmp_path / "b.db", read_only=True).dump() == ref


def test_a_second_harvest_of_the_same_run_gets_a_clear_error(tmp_path):
    from mechscope.errors import LockedError
    from mechscope.io_safety import dir_lock

    harvest_proc.run(str(tmp_path / "a.db"), str(tmp_path / "state"))
    (run_dir,) = [p for p in (tmp_path / "state").iterdir() if p.is_dir()]
    with dir_lock(run_dir, "feature harvest"), pytest.raises(LockedError, match=str(os.getpid())):
        harvest_proc.run(str(tmp_path / "a.db"), str(tmp_path / "state"))
