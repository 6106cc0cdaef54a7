"""The layered SVG (valid XML, one line per edge, grouped-query receivers drawn into their heads' span), the
faithfulness figure, and ``mechscope circuit discover / bench`` on a tiny stand-in ground truth."""

from __future__ import annotations

import json
import sys
import types
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pytest
import torch
from typer.testing import CliRunner

from mechscope.circuits.discover import discover
from mechscope.circuits.draw import circuit_svg, faithfulness_figure
from mechscope.circuits.evaluate import faithfulness_curve
from mechscope.circuits.graph import Graph
from mechscope.circuits.scores import Circuit
from mechscope.cli.main import app
from tests.conftest import tiny_model
from tests.unit.circuits.helpers import logit_diff_metric, pair

SVG = "{http://www.w3.org/2000/svg}"


def test_svg_has_one_line_per_edge_and_boxes_for_every_component() -> None:
    model = tiny_model("llama")
    g = Graph.from_model(model)
    edges = ["input->a0.h1<q>", "a0.h1->a1.kv1<k>", "a0.h2->m0", "m1->logits"]
    root = ET.fromstring(circuit_svg(Circuit(g, frozenset(edges)), title="t"))
    lines = root.findall(f"{SVG}line")
    assert sorted(ln.find(f"{SVG}title").text.split()[0] for ln in lines) == sorted(edges)
    assert len(root.findall(f"{SVG}rect")) == 1 + len(g.senders) + 1  # background, components, logits
    kv = next(ln for ln in lines if "kv1<k>" in ln.find(f"{SVG}title").text)
    head2 = next(t for t in root.findall(f"{SVG}text") if t.text == "1.h2")  # kv head 1 serves heads 2, 3
    head3 = next(t for t in root.findall(f"{SVG}text") if t.text == "1.h3")
    assert float(head2.get("x")) < float(kv.get("x2")) < float(head3.get("x"))


def test_faithfulness_figure_draws_each_curve() -> None:
    model = tiny_model("gpt2")
    clean, corrupted = pair()
    metric = logit_diff_metric()
    s = discover(model, clean, corrupted, metric, method="eap")
    curve = faithfulness_curve(model, clean, corrupted, metric, s, fractions=[0.0, 0.2, 1.0])
    fig = faithfulness_figure({"eap": curve})
    assert len(fig.axes[0].lines) == 1 + 2  # the curve and the two reference lines


@dataclass
class _Truth:
    name: str
    model: object
    clean: torch.Tensor
    corrupted: torch.Tensor
    metric: object
    edges: frozenset
    readout: int | None
    description: str = ""


@pytest.fixture
def fake_truth(monkeypatch):
    """A stand-in for mechscope.circuits.truth (written by the ground-truth work) and its bench."""
    model = tiny_model("attn_only")
    clean, corrupted = pair()
    edges = frozenset(["a1.h0->logits", "a0.h1->a1.h0<v>"])
    mod = types.ModuleType("mechscope.circuits.truth")
    mod.load_truth = lambda name: _Truth(name, model, clean, corrupted, logit_diff_metric(), edges, -1)
    bench = types.ModuleType("mechscope.circuits.bench")
    calls = []
    bench.run_bench = lambda methods=None, truths=None: calls.append((methods, truths)) or [
        {"method": "eap", "truth": "planted", "roc_auc": 1.0}]
    monkeypatch.setitem(sys.modules, "mechscope.circuits.truth", mod)
    monkeypatch.setitem(sys.modules, "mechscope.circuits.bench", bench)
    return calls


def test_cli_discover_json_and_out_dir(fake_truth, tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["circuit", "discover", "--task", "planted", "--method", "eap", "--json",
                              "--out", str(tmp_path), "--top", "5"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) >= {"method", "n_edges_total", "n_edges_kept", "faithfulness", "wall_seconds", "edges"}
    assert out["n_edges_kept"] == 2 and len(out["edges"]) == 5  # the true circuit's size
    assert abs(out["edges"][0][1]) >= abs(out["edges"][-1][1])
    assert len(json.loads((tmp_path / "scores.json").read_text())) == out["n_edges_total"]
    ET.parse(tmp_path / "circuit.svg")
    res = runner.invoke(app, ["circuit", "discover", "--task", "planted", "--method", "acdc", "--threshold",
                              "0.001", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["method"] == "acdc"


def test_cli_errors_and_bench_delegates(fake_truth) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["circuit", "discover", "--task", "planted", "--method", "eapp"])
    assert res.exit_code == 2 and "unknown circuit method" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["circuit", "discover", "--task", "planted", "--model", "x"])
    assert res.exit_code == 2 and "--task ioi only" in res.output
    res = runner.invoke(app, ["circuit", "bench", "--methods", "eap,acdc", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["roc_auc"] == 1.0
    assert fake_truth == [(["eap", "acdc"], None)]


def test_cli_discover_selection(fake_truth) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["circuit", "discover", "--task", "planted", "--method", "eap", "--json", "--keep", "3",
                              "--selection", "signed"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["selection"] == "signed" and out["n_edges_kept"] == 3
    res = runner.invoke(app, ["circuit", "discover", "--task", "planted", "--method", "eap", "--selection", "best"])
    assert res.exit_code == 2 and "--selection must be one of" in res.output and "Traceback" not in res.output
