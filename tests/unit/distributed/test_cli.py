"""`dict harvest | train` print the estimate first; `dict stream` trains from the model and spills a store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mechscope.activations.store import ActivationStore
from mechscope.cli.main import app
from mechscope.models.transformer import HookedTransformer
from tests.conftest import tiny_cfg

HOOK = "blocks.0.hook_resid_post"


def test_stream_and_estimates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    HookedTransformer(tiny_cfg("llama", d_vocab=257, n_ctx=64), seed=0).save(tmp_path / "model")
    lines = [{"text": f"line {i} of a tiny corpus where sparse features fire rarely"} for i in range(60)]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    src = ["--model", str(tmp_path / "model"), "--corpus", str(tmp_path / "c.jsonl"), "--seq-len", "32"]
    train = ["--arch", "topk", "--k", "4", "--d-sae", "32", "--batch-size", "64", "--steps", "8", "--buffer-rows", "256"]
    res = CliRunner().invoke(app, ["dict", "stream", *src, "--hooks", HOOK, "--tokens", "600", *train,
                                   "--out", str(tmp_path / "run"), "--spill", str(tmp_path / "spill"),
                                   "--shard-rows", "256"])
    assert res.exit_code == 0, res.output
    assert "estimate [stream]" in res.stderr and "tok/s" in res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["d_sae"] == 32 and (tmp_path / "run" / "dictionary" / "config.json").is_file()
    spilled = ActivationStore.open(tmp_path / "spill")
    assert spilled.complete and spilled.n_rows == 600
    two = f"{HOOK},blocks.1.hook_resid_post"
    res = CliRunner().invoke(app, ["dict", "stream", *src, "--hooks", two, "--tokens", "600", *train, "--no-estimate",
                                   "--distribute-hooks", "--out", str(tmp_path / "per-hook")])
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.stdout.strip().splitlines()[-1])["runs"]) == set(two.split(","))
    assert (tmp_path / "per-hook" / "blocks.1.hook_resid_post" / "dictionary" / "config.json").is_file()
    res = CliRunner().invoke(app, ["dict", "stream", *src, "--hooks", two, "--tokens", "600", *train, "--no-estimate",
                                   "--distribute-hooks", "--arch", "crosscoder", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "one single-hook dictionary per hook" in res.output
    res = CliRunner().invoke(app, ["dict", "harvest", *src, "--hooks", HOOK, "--tokens", "300",
                                   "--out", str(tmp_path / "acts")])
    assert res.exit_code == 0 and "estimate [harvest]" in res.stderr, res.output
    res = CliRunner().invoke(app, ["dict", "train", "--activations", str(tmp_path / "acts"), *train[:-4],
                                   "--steps", "3", "--out", str(tmp_path / "t")])
    assert res.exit_code == 0 and "estimate [train]" in res.stderr, res.output
    res = CliRunner().invoke(app, ["dict", "harvest", *src, "--hooks", HOOK, "--tokens", str(10**13),
                                   "--out", str(tmp_path / "huge")])
    assert res.exit_code == 2 and "GB are free" in res.output  # refused before anything is written
    assert not (tmp_path / "huge").exists()
