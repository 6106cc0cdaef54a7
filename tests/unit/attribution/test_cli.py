"""``mechscope attribute graph/tokens`` on a tiny saved model with exact transcoders; clean errors."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from mechscope.cli.main import app
from mechscope.dictionaries import io
from mechscope.tokens import Tokenizer
from tests.unit.attribution.test_graph import exact_transcoders, relu_model

runner = CliRunner()
WORDS = [f"w{i}" for i in range(49)]


def _saved(tmp_path):
    model = relu_model().float()
    model.tokenizer = Tokenizer.words(WORDS, bos="<s>")
    model.save(tmp_path / "model")
    for i, t in enumerate(exact_transcoders(model.double())):
        io.save(t.to(torch.float32).with_config(dtype="float32"), tmp_path / "tcs" / f"layer{i}")
    return tmp_path / "model", tmp_path / "tcs"


def test_attribute_graph_and_tokens_cli(tmp_path):
    model_dir, tcs = _saved(tmp_path)
    prompt = "w3 w17 w5 w40 w8 w2"
    res = runner.invoke(app, ["attribute", "graph", "--model", str(model_dir), "--prompt", prompt,
                              "--transcoders", str(tcs), "--out", str(tmp_path / "g"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    for key in ("n_active_features", "n_nodes_kept", "n_edges_kept", "replacement_score", "completeness_score",
                "top_logits", "wall_seconds", "peak_rss_mb"):
        assert key in out
    assert out["completeness_score"] > 0.99 and out["n_edges_kept"] > 0
    assert (tmp_path / "g" / "graph.svg").read_text().startswith("<svg")
    saved = json.loads((tmp_path / "g" / "graph.json").read_text())
    assert saved["n_nodes_kept"] == len(saved["nodes"])
    res = runner.invoke(app, ["attribute", "svg", str(tmp_path / "g" / "graph.json"), "--out",
                              str(tmp_path / "small.svg"), "--max-edges", "3"])
    assert res.exit_code == 0, res.output
    small = (tmp_path / "small.svg").read_text()
    assert small.startswith("<svg") and small.count("<line") == min(3, saved["n_edges_kept"])
    assert small.count("<circle") + small.count("<rect x") == saved["n_nodes_kept"]
    res = runner.invoke(app, ["attribute", "svg", str(tmp_path / "g" / "graph.svg"), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    for method in ("ig", "patch"):
        res = runner.invoke(app, ["attribute", "tokens", "--model", str(model_dir), "--prompt", prompt,
                                  "--answer", "w9", "--wrong", "w4", "--method", method, "--json"])
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        assert out["method"] == method and len(out["tokens"]) == len(out["attributions"]) == 7
        assert out["attributions"][0] == 0.0  # BOS held fixed


def test_attribute_cli_errors_are_one_clear_line(tmp_path):
    model_dir, tcs = _saved(tmp_path)
    res = runner.invoke(app, ["attribute", "tokens", "--model", str(model_dir), "--prompt", "w1 w2",
                              "--answer", "w3 w4", "--method", "ig"])
    assert res.exit_code == 2 and "--answer" in res.output and "2 tokens" in res.output
    res = runner.invoke(app, ["attribute", "tokens", "--model", str(model_dir), "--prompt", "w1 w2",
                              "--answer", "w3", "--method", "saliency"])
    assert res.exit_code == 2 and "ig, shapley, lime, patch" in res.output
    res = runner.invoke(app, ["attribute", "graph", "--model", str(model_dir), "--prompt", "w1 " * 20,
                              "--transcoders", str(tcs), "--memory-budget-mb", "0.01"])
    assert res.exit_code == 2 and "memory budget" in res.output and "Traceback" not in res.output
