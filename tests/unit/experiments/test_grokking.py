"""Grokking end to end on a small modulus: the run generalises and the analysis finds few key frequencies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mechscope.data.tasks.modular import ModularConfig, make_modular_data
from mechscope.errors import ConfigError, ModelFileError
from mechscope.experiments.grokking.analysis import analyze
from mechscope.experiments.grokking.config import QUICK
from mechscope.experiments.grokking.run import answer_logits, build, run
from mechscope.train import TrainConfig, latest_checkpoint, read_metrics, train


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("grok")
    run(QUICK, d, progress=False)
    return d, analyze(d)


def test_modular_split_is_seeded_and_complete() -> None:
    a = make_modular_data(ModularConfig(p=7, train_frac=0.3, seed=1))
    b = make_modular_data(ModularConfig(p=7, train_frac=0.3, seed=1))
    c = make_modular_data(ModularConfig(p=7, train_frac=0.3, seed=2))
    assert torch.equal(a.train_idx, b.train_idx) and not torch.equal(a.train_idx, c.train_idx)
    assert sorted(torch.cat([a.train_idx, a.test_idx]).tolist()) == list(range(49))
    assert a.train_idx.numel() == round(0.3 * 49)
    i = 3 * 7 + 5
    assert a.tokens[i].tolist() == [3, 5, 7] and int(a.labels[i]) == (3 + 5) % 7
    with pytest.raises(ConfigError, match="train_frac"):
        ModularConfig(p=7, train_frac=1.5)


def test_answer_logits_equal_full_forward() -> None:
    model, data = build(QUICK.replace(p=11))
    tokens = data.tokens[:40]
    full = model(tokens)[:, -1]
    fast = answer_logits(model, tokens)
    assert torch.allclose(fast, full, atol=1e-5)
    g_full = torch.autograd.grad(full.pow(2).sum(), model.W_E)[0]
    g_fast = torch.autograd.grad(answer_logits(model, tokens).pow(2).sum(), model.W_E)[0]
    assert torch.allclose(g_full, g_fast, atol=1e-5)


def test_small_p_run_groks_with_sparse_key_frequencies(quick_run: tuple[Path, dict]) -> None:
    _, s = quick_run
    assert s["p"] == QUICK.p
    assert s["train_acc"] == 1.0 and s["test_acc"] >= 0.98
    assert s["epoch_train_100"] is not None and s["epoch_test_99"] is not None
    assert s["epoch_train_100"] < s["epoch_test_99"]  # memorised first, generalised later
    assert 1 <= len(s["key_frequencies"]) <= 6 < QUICK.p // 2
    assert s["embed_key_freq_fraction"] >= 0.5
    hist = s["history"]
    assert hist[0]["step"] < hist[-1]["step"] and hist[-1]["restricted_loss"] < hist[0]["restricted_loss"]


def test_cli_analyze_prints_the_summary_json(quick_run: tuple[Path, dict], tmp_path: Path) -> None:
    from mechscope.cli.grokking import app

    d, s = quick_run
    res = CliRunner().invoke(app, ["analyze", str(d), "--json", "--figures", str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("p", "train_acc", "test_acc", "epoch_train_100", "epoch_test_99", "key_frequencies",
                "embed_key_freq_fraction", "neuron_key_freq_r2", "restricted_loss", "excluded_loss", "test_loss",
                "ablated_nonkey_test_loss", "wall_seconds"):
        assert key in out, key
    assert out["key_frequencies"] == s["key_frequencies"] and out["test_acc"] == s["test_acc"]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["embed_fourier_norms.png", "losses.png",
                                                             "neuron_heatmaps.png", "progress_measures.png"]


def test_analyze_rejects_other_runs_and_corruption(quick_run: tuple[Path, dict], tmp_path: Path) -> None:
    other = tmp_path / "other"
    net = torch.nn.Linear(2, 2)
    train(net, lambda m, b: m(b).pow(2).mean(), torch.ones(3, 2), TrainConfig(steps=2, progress=False), other,
          experiment="induction")
    with pytest.raises(ConfigError, match="induction"):
        analyze(other)
    with pytest.raises(ModelFileError, match="not a mechscope training run"):
        analyze(tmp_path / "missing")
    d, _ = quick_run
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(d, broken)
    f = latest_checkpoint(broken) / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelFileError, match="corrupted"):
        analyze(broken)


def test_cli_train_then_resume_with_more_epochs(tmp_path: Path) -> None:
    from mechscope.cli.grokking import app

    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--p", "11", "--epochs", "20", "--no-progress", "--threads", "1"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "already holds a training run" in again.output
    res = CliRunner().invoke(app, ["train", "--out", str(out), "--epochs", "30", "--resume", "--no-progress",
                                   "--threads", "1"])
    assert res.exit_code == 0, res.output
    final = json.loads(res.stdout.strip().splitlines()[-1])
    assert final["epochs"] == 30 and final["wall_seconds"] > 0
    assert [r["step"] for r in read_metrics(out)] == list(range(31))
