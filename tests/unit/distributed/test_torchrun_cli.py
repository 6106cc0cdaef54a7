"""`torchrun ... mechscope dict harvest | train` with the single-process flags gives the single-process results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mechscope.cli.main import app
from mechscope.dictionaries import io
from mechscope.models.transformer import HookedTransformer
from tests.conftest import tiny_cfg

from .launch import free_port

HOOK = "blocks.0.hook_resid_post"


def _torchrun(args: list[str], tmp: Path) -> dict[str, object]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "mechscope.cli.main", *args]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MECHSCOPE_CACHE": str(tmp / "cache")}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]  # each rank's one-line user error
    assert res.returncode == 0, "\n".join(errors) + "\n" + res.stderr[-3000:]
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_torchrun_harvest_and_train_match_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    HookedTransformer(tiny_cfg("llama", d_vocab=257, n_ctx=64), seed=0).save(tmp_path / "model")
    lines = [{"text": f"line {i} of a tiny corpus where sparse features fire rarely"} for i in range(60)]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    harvest = ["dict", "harvest", "--model", str(tmp_path / "model"), "--hooks", HOOK, "--tokens", "600",
               "--corpus", str(tmp_path / "c.jsonl"), "--seq-len", "32", "--shard-rows", "128"]
    train = ["dict", "train", "--arch", "topk", "--k", "4", "--d-sae", "32", "--batch-size", "64", "--steps", "12",
             "--lr", "0.01", "--buffer-rows", "256"]
    one = CliRunner().invoke(app, [*harvest, "--out", str(tmp_path / "acts1")])
    assert one.exit_code == 0, one.output
    info = _torchrun([*harvest, "--out", str(tmp_path / "acts2")], tmp_path)
    assert info["world_size"] == 2 and info["rows"] == 600 and info["shards"] == 5
    for i in range(5):
        a = io.read_tensors(tmp_path / "acts1" / f"shard-{i:05d}.safetensors")
        b = io.read_tensors(tmp_path / "acts2" / f"shard-{i:05d}.safetensors")
        assert torch.equal(a[HOOK], b[HOOK])
    one = CliRunner().invoke(app, [*train, "--activations", str(tmp_path / "acts1"), "--out", str(tmp_path / "t1")])
    assert one.exit_code == 0, one.output
    _torchrun([*train, "--activations", str(tmp_path / "acts1"), "--out", str(tmp_path / "t2")], tmp_path)
    a, b = (io.load(tmp_path / t / "dictionary").state_dict() for t in ("t1", "t2"))
    assert all((a[k] - b[k]).abs().max() <= 1e-6 for k in a)
    stream = ["dict", "stream", *harvest[2:8], "--corpus", str(tmp_path / "c.jsonl"), "--seq-len", "32",
              "--no-estimate", *train[2:], "--steps", "8"]  # 600 rows: 9 batches of 64
    one = CliRunner().invoke(app, [*stream, "--out", str(tmp_path / "s1")])
    assert one.exit_code == 0, one.output
    info = _torchrun([*stream, "--out", str(tmp_path / "s2")], tmp_path)  # forward passes dealt over 2 ranks
    assert info["world_size"] == 2
    a, b = (io.load(tmp_path / t / "dictionary").state_dict() for t in ("s1", "s2"))
    assert all((a[k] - b[k]).abs().max() <= 1e-6 for k in a)
