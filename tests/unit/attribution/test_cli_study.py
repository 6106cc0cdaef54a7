"""``mechscope attribute compare`` and ``fidelity`` on tiny saved models (word / byte vocabularies)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mechscope.attribution.study import FACT_PROMPTS, IOI_PROMPTS
from mechscope.cli.main import app
from mechscope.dictionaries import io
from mechscope.models.config import MLPConfig
from mechscope.tokens import Tokenizer
from tests.conftest import tiny_model
from tests.unit.attribution.test_graph import exact_transcoders

runner = CliRunner()


def _study_vocab() -> list[str]:
    words = {w for p, *ans in IOI_PROMPTS + FACT_PROMPTS for w in " ".join([p, *ans]).split()}  # type: ignore[operator]
    return sorted(words)


def test_attribute_compare_cli_writes_the_table(tmp_path):
    vocab = _study_vocab()
    model = tiny_model("llama", seed=4, d_vocab=len(vocab) + 1)
    model.tokenizer = Tokenizer.words(vocab, bos="<s>")
    model.save(tmp_path / "model")
    res = runner.invoke(app, ["attribute", "compare", "--model", str(tmp_path / "model"), "--steps", "4",
                              "--shapley-samples", "2", "--lime-samples", "24", "--out", str(tmp_path / "c"),
                              "--json"])
    assert res.exit_code == 0, res.output
    table = json.loads(res.stdout)
    assert [(r["task"], r["method"]) for r in table] == [(t, m) for t in ("ioi", "facts")
                                                          for m in ("ig", "shapley", "lime")]
    for r in table:
        assert r["n_prompts"] == 4 and -1.0 <= r["mean_spearman_vs_patch"] <= 1.0
        assert r["min_spearman_vs_patch"] <= r["mean_spearman_vs_patch"] and 0 <= r["top1_agreement"] <= 1
    saved = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert saved["table"] == table and len(saved["prompts"]) == 8
    row = saved["prompts"][0]
    assert row["tokens"][0] == "<s>" and row["attributions"]["ig"][0] == 0.0  # the BOS is held fixed
    # Shapley efficiency: its values sum to metric(real) - metric(baseline)
    assert sum(row["attributions"]["shapley"]) == pytest.approx(row["metric_full"] - row["metric_baseline"],
                                                                abs=1e-3)


def test_attribute_fidelity_cli_exact_set_recovers_everything(tmp_path):
    model = tiny_model("gpt2", seed=2, n_layers=3, d_vocab=257, n_ctx=64,
                       mlp=MLPConfig(d_mlp=48, act="relu", bias=True)).double()
    tcs = exact_transcoders(model)
    model = model.float()
    model.tokenizer = Tokenizer.words([f"w{i}" for i in range(256)], bos="<s>")
    model.save(tmp_path / "model")
    for i, t in enumerate(tcs[:2]):  # a subset: layers 0 and 1
        io.save(t.to(torch.float32).with_config(dtype="float32"), tmp_path / "tcs" / f"layer{i}")
    args = ["attribute", "fidelity", "--model", str(tmp_path / "model"), "--transcoders", str(tmp_path / "tcs"),
            "--n-seq", "2", "--seq-len", "32", "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["layers"] == [0, 1]
    assert max(out["nmse"].values()) < 1e-6
    assert abs(out["ce_recovered"] - 1.0) < 1e-3
    res = runner.invoke(app, args[:-5] + ["--n-seq", "100000", "--seq-len", "32"])
    assert res.exit_code == 2 and "holds only" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["attribute", "fidelity", "--model", str(tmp_path / "model"),
                              "--transcoders", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "Traceback" not in res.output
