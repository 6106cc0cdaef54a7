"""``mechscope probe`` and ``mechscope scrub`` on tiny models: JSON shapes and clean errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mechscope.cli.main import app
from tests.helpers import tiny_model

runner = CliRunner()


def _saved_text_model(tmp_path, monkeypatch):
    """A tiny byte-level model; ``load_model`` hands it out by name (a saved byte tokenizer does not reload)."""
    import mechscope.cli.common
    from mechscope.tokens import Tokenizer

    model = tiny_model("gpt2", d_vocab=257, n_ctx=128)
    model.tokenizer = Tokenizer.bytes()
    monkeypatch.setattr(mechscope.cli.common, "load_model", lambda name: model if name == "tiny-bytes" else None)
    return "tiny-bytes"


def test_probe_linear_and_ccs_json(tmp_path, monkeypatch) -> None:
    path = _saved_text_model(tmp_path, monkeypatch)
    res = runner.invoke(app, ["probe", "linear", "--model", path, "--dataset", "compare", "--json", "--max-items", "60",
                              "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [r["hook"] for r in out["rows"]] == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert out["n"] == 60 and 0 <= out["best"]["test"] <= 1 and out["best"]["selectivity"] is not None
    assert (tmp_path / "out" / "best_probe" / "probe.safetensors").is_file()
    assert (tmp_path / "out" / "probe_compare.png").stat().st_size > 1000
    res = runner.invoke(app, ["probe", "ccs", "--model", path, "--dataset", "arith", "--max-items", "40",
                              "--epochs", "10", "--restarts", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.stdout)) >= {"n", "layer", "ccs", "logistic", "zero_shot", "random"}


def test_probe_errors_exit_2(tmp_path, monkeypatch) -> None:
    res = runner.invoke(app, ["probe", "das", "--task", "nope", "--json"])
    assert res.exit_code == 2 and "unknown; choose one of hierarchical-equality, grokking, ioi" in res.output
    path = _saved_text_model(tmp_path, monkeypatch)
    res = runner.invoke(app, ["probe", "linear", "--model", path, "--dataset", "nope"])
    assert res.exit_code == 2 and "unknown truth dataset" in res.output


def test_scrub_induction_json(tmp_path) -> None:
    res = runner.invoke(app, ["scrub", "induction", str(tmp_path / "run"), "--steps", "5", "--n-eval", "12", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    names = [h["name"] for h in out["hypotheses"]]
    assert names == ["everything", "full induction", "previous-token head only", "induction head only", "nothing"]
    assert abs(out["hypotheses"][0]["loss_recovered"] - 1) < 1e-3 and abs(out["hypotheses"][-1]["loss_recovered"]) < 1e-3
    again = runner.invoke(app, ["scrub", "induction", str(tmp_path / "run"), "--n-eval", "12", "--json"])  # reuses the saved model
    assert json.loads(again.stdout) == out
    per_path = runner.invoke(app, ["scrub", "induction", str(tmp_path / "run"), "--n-eval", "12", "--json",
                                   "--resample", "per_path"])
    pp = json.loads(per_path.stdout)
    assert pp["resample"] == "per_path" and [h["name"] for h in pp["hypotheses"]] == names
    assert abs(pp["hypotheses"][0]["loss_recovered"] - 1) < 1e-3 and abs(pp["hypotheses"][-1]["loss_recovered"]) < 1e-3
    bad = runner.invoke(app, ["scrub", "induction", str(tmp_path / "run"), "--resample", "never"])
    assert bad.exit_code == 2 and "resample must be one of" in bad.output
