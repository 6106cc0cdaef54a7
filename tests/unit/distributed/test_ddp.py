"""Data-parallel training on 2 gloo ranks equals one process on the same global batches; checkpoints resume
with another world size, and a killed rank leaves a resumable run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechscope.dictionaries import io
from mechscope.dictionaries.train import Trainer
from mechscope.distributed import LOCAL, DistEnv, Sync, env_from, launched, owned, rank_slice
from mechscope.errors import ConfigError

from . import workers as w
from .launch import run_ranks


def _reference(arch: str, out: Path, n_batches: int = 8, total: int = 8) -> dict[str, torch.Tensor]:
    d = w.dictionary(arch)
    Trainer(d, w.trainer_cfg(out, total)).fit(iter(w.batches(n_batches)))
    return d.state_dict()


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return io.load(out / "weights").state_dict()


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() <= 1e-6, k


@pytest.mark.parametrize("arch", ["topk", "relu", "batchtopk"])
def test_two_ranks_equal_one(two_rank_runs: Path, tmp_path: Path, arch: str) -> None:
    ref = _reference(arch, tmp_path / "one")
    got = _weights(two_rank_runs / arch)
    _close(ref, got)
    assert not torch.equal(ref["W_dec"], w.dictionary(arch).state_dict()["W_dec"])  # it did train
    # rank 0 alone wrote the metrics, with global token counts
    rows = (two_rank_runs / arch / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 4 and '"tokens": 256' in rows[-1]
    if arch == "batchtopk":  # the running inference threshold is the global batch's, not a rank's share's
        assert float(got["threshold"]) > 0 and abs(float(got["threshold"] - ref["threshold"])) <= 1e-6
    if arch == "topk":  # dead latents were tracked over the global batch (aux-k ran identically)
        assert (tmp_path / "one" / "metrics.jsonl").read_text() .count("dead_fraction") == 4


def test_killed_rank_then_resume_on_one_rank(tmp_path: Path) -> None:
    """Rank 1 dies at batch 5 of 8; the step-3 checkpoint is intact and 1 process finishes the same run."""
    ref = _reference("topk", tmp_path / "ref")
    out = tmp_path / "run"
    with pytest.raises(Exception):  # noqa: B017  (spawn reports the dead rank)
        run_ranks(2, w.fit, "topk", str(out), 8, 8, 3, 5)
    latest = io.read_json(out / "checkpoints" / "latest.json")
    assert latest["step"] == 3
    assert not (out / "dictionary").exists()
    d = w.dictionary("topk")
    Trainer(d, w.trainer_cfg(out, 8, 3)).fit(iter(w.batches(8)))  # world size 1 resumes it
    _close(ref, d.state_dict())


def test_one_rank_checkpoint_resumed_on_two(two_rank_runs: Path, tmp_path: Path) -> None:
    """The fixture trained 4 steps on one process (its stream ended), then 2 ranks resumed to step 8."""
    ref = _reference("topk", tmp_path / "ref")
    _close(ref, _weights(two_rank_runs / "resume"))
    assert io.read_json(two_rank_runs / "resume" / "checkpoints" / "latest.json")["step"] == 8


def test_environment_and_slicing_errors() -> None:
    assert env_from({}) is None and not launched({})
    assert env_from({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == DistEnv(1, 2, 1)
    assert launched({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ConfigError, match="RANK < WORLD_SIZE"):
        env_from({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ConfigError, match=r"\['WORLD_SIZE'\] unset"):
        env_from({"RANK": "0", "LOCAL_RANK": "0"})
    assert rank_slice(torch.ones(5, 2), LOCAL).shape == (5, 2)

    two = Sync(local=True)  # a stand-in for rank 1 of 2 (slicing needs only these)
    two.rank, two.world_size = 1, 2

    x = torch.arange(6.0).reshape(6, 1)
    assert rank_slice((x, -x), two)[1].flatten().tolist() == [-3.0, -4.0, -5.0]
    with pytest.raises(ConfigError, match="divisible by the world size"):
        rank_slice(torch.ones(5, 2), two)
    assert owned(["a", "b", "c"], two) == ["b"]
    with pytest.raises(ConfigError, match="launch at most 1 ranks"):
        owned(["a"], two)
