"""IOI DAS on a tiny model with a word tokenizer: pairs, labels, result rows, CLI."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from mechscope.cli.main import app
from mechscope.errors import ConfigError
from mechscope.experiments.ioi_das.run import IOIDASConfig, counterfactual_pairs, run
from tests.conftest import tiny_model
from tests.unit.data.test_ioi_prompts import word_tokenizer


def _model():
    tok = word_tokenizer()
    model = tiny_model("llama", seed=0, d_vocab=tok.vocab_size, n_ctx=32)
    model.tokenizer = tok
    return model


def test_counterfactual_pairs_flip_exactly_when_orders_differ() -> None:
    abba = [True, False, True, False, True, False]
    base, src, lab = counterfactual_pairs(abba, list(range(6)), 4, random.Random(0))
    assert len(base) == 24 and int(lab.sum()) == 12
    assert all((abba[int(b)] != abba[int(s)]) == bool(y) for b, s, y in zip(base, src, lab))
    assert bool((base != src).all())
    with pytest.raises(ConfigError, match="both name orders"):
        counterfactual_pairs([True, True, True], [0, 1, 2], 2, random.Random(0))


def test_ioi_das_rows_on_a_tiny_model() -> None:
    cfg = IOIDASConfig(n_prompts=12, layers=(0, 1), epochs=2, batch_size=8)
    res = run(_model(), cfg)
    assert [(r["position"], r["layer"]) for r in res["by_layer"]] == [("S2", 0), ("S2", 1), ("end", 0), ("end", 1)]
    assert res["n_test_pairs"] == 4 * 4 and res["n_train_pairs"] == 4 * 8  # 2 of each order held out
    for r in res["by_layer"]:
        assert all(0 <= r[k] <= 1 for k in ("iia", "iia_flip", "iia_random_rotation", "iia_full_residual"))
    assert {"iia", "iia_random_rotation", "subspace_dim", "layer", "position"} <= set(res)
    with pytest.raises(ConfigError, match="out of range"):
        run(_model(), IOIDASConfig(n_prompts=8, layers=(7,)))
    with pytest.raises(ConfigError, match="positions"):
        IOIDASConfig(positions=("nowhere",))


def test_probe_das_cli(tmp_path, monkeypatch) -> None:
    import mechscope.cli.common

    model = _model()
    monkeypatch.setattr(mechscope.cli.common, "load_model", lambda name: model)
    runner = CliRunner()
    res = runner.invoke(app, ["probe", "das", "--task", "ioi", "--n-prompts", "8", "--layers", "1", "--json",
                              "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["task"] == "ioi" and len(out["by_layer"]) == 2 and (tmp_path / "das_ioi.png").stat().st_size > 1000
    res = runner.invoke(app, ["probe", "das", "--task", "ioi", "--n-prompts", "8", "--layers", "0",
                              "--positions", "end", "--dims", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert [(r["position"], r["subspace_dim"]) for r in json.loads(res.stdout)["by_layer"]] == [("end", 1)]
    for args, msg in [(["--task", "nope"], "unknown"), (["--task", "ioi", "--positions", "middle"], "positions"), (["--task", "grokking"], "needs a RUN"),
                      (["--task", "grokking", str(tmp_path / "missing")], "not a mechscope training run")]:
        res = runner.invoke(app, ["probe", "das", *args, "--json"])
        assert res.exit_code == 2 and msg in res.output, res.output
