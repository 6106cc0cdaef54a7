"""Run directories in the web app: a patching result as an inline-SVG heatmap, a circuit directory (written by
the real ``circuit discover`` writer) as its summary, picture and edges; escaped, sandboxed, path-safe."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

from mechscope.circuits.discover import discover
from mechscope.cli.circuit import _write
from mechscope.features.db import FeatureDB
from mechscope.interventions.result import SweepResult
from mechscope.io_safety import atomic_write_json
from mechscope.web.app import create_app
from mechscope.web.server import serving
from tests.conftest import tiny_model
from tests.unit.circuits.helpers import logit_diff_metric, pair
from tests.unit.features.escaping import inspect

MARK = "<script>alert('run')</script>"


@pytest.fixture(scope="module")
def runs_site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    db = FeatureDB.open(tmp / "f.db")
    db.put_model("m", {})
    db.close()
    run = tmp / "run"
    (run / "patch").mkdir(parents=True)
    two = SweepResult(values=torch.tensor([[0.0, 1.0, 2.0], [1.5, -1.0, 0.5]]), axes=("layer", "pos"),
                      labels={"layer": ["0", "1"], "pos": ["a", MARK, "c"]}, sweep="resid_pre", direction="denoise",
                      metric=MARK, clean=2.0, corrupted=0.0)
    three = SweepResult(values=torch.arange(12.0).view(2, 3, 2), axes=("layer", "head", "pos"),
                        labels={"layer": ["0", "1"], "head": ["h0", "h1", "h2"], "pos": ["x", "y"]}, sweep="z_by_pos",
                        direction="noise", metric="logit_diff", clean=11.0, corrupted=0.0)
    atomic_write_json(run / "patch" / "fig.json", two.to_dict())
    atomic_write_json(run / "patch" / "three.json", three.to_dict())
    (run / "patch" / "other.json").write_text(json.dumps({"axes": ["layer"], "labels": {"layer": ["0"]},
                                                         "values": [1, 2], "clean": 1, "corrupted": 0}))  # bad shape
    model = tiny_model("gpt2")
    clean, corrupted = pair()
    scores = discover(model, clean, corrupted, logit_diff_metric(), method="eap")
    _write(run / "circuit", {"task": MARK, "method": "eap"}, scores, scores.top(8))
    (run / "circuit" / "evil.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    (tmp / "secret.json").write_text(json.dumps(two.to_dict() | {"metric": "SECRET"}))
    with serving(create_app(tmp / "f.db", runs=[run])) as url:
        yield url, scores


def test_patching_heatmaps(runs_site):
    url, _ = runs_site
    with httpx.Client(base_url=url, timeout=30) as c:
        listing = c.get("/runs/0/patch/").text
        assert "fig.json?view=1" in listing and "three.json?view=1" in listing and "other.json?view=1" not in listing
        r = c.get("/runs/0/patch/fig.json", params={"view": 1})
        assert r.status_code == 200
        doc = inspect(r.text)
        assert doc.tags.count("svg") == 1 and doc.tags.count("rect") == 6 and "script" not in doc.tags
        assert MARK in "".join(doc.text)  # shown as text
        assert "layer / pos" not in r.text and "0 / " + MARK in "".join(doc.text)
        assert "1.000" in r.text and "-0.500" in r.text  # normalised: (x - corrupted) / (clean - corrupted)
        doc3 = inspect(c.get("/runs/0/patch/three.json", params={"view": 1}).text)
        assert doc3.tags.count("svg") == 3 and doc3.tags.count("rect") == 12  # one panel per head
        assert c.get("/runs/0/patch/other.json", params={"view": 1}).status_code == 404
        assert c.get("/runs/0/patch/fig.json").json()["axes"] == ["layer", "pos"]  # the raw file is still served
        for bad in ("/runs/0/../secret.json?view=1", "/runs/0/%2e%2e/secret.json?view=1", "/runs/1/x?view=1"):
            r = c.get(bad)
            assert r.status_code == 404 and "SECRET" not in r.text, bad


def test_circuit_directory(runs_site):
    url, scores = runs_site
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.get("/runs/0/circuit/")
        assert r.status_code == 200
        doc = inspect(r.text)
        assert "script" not in doc.tags and MARK in "".join(doc.text)
        assert '<img id="circuit" alt="circuit" src="/runs/0/circuit/circuit.svg">' in r.text
        strongest = scores.ranked(1)[0][0]
        assert strongest in "".join(doc.text) and r.text.count("<tr>") >= 20
        svg = c.get("/runs/0/circuit/circuit.svg")
        assert svg.status_code == 200 and "<svg" in svg.text[:300]
        evil = c.get("/runs/0/circuit/evil.svg")  # opened directly: sandboxed, its script cannot run
        assert "sandbox" in evil.headers["content-security-policy"]


def test_patch_cli_writes_a_result_the_view_recognises(tmp_path):
    from typer.testing import CliRunner

    from mechscope.cli.main import app
    from mechscope.web.runs_view import sweep_body, sweep_result
    from tests.unit.features import helpers

    mdir, _ = helpers.save_tiny(tmp_path)
    r = CliRunner().invoke(app, ["patch", "--model", str(mdir), "--clean", "abcab", "--corrupted", "abdab",
                                 "--answer", "c", "--wrong", "d", "--out", str(tmp_path / "run" / "fig.png"), "--json"])
    assert r.exit_code == 0, r.output
    d = sweep_result(tmp_path / "run" / "fig.json")
    assert d is not None and d["sweep"] == "resid_pre" and d["axes"] == ["layer", "pos"]
    doc = inspect(sweep_body(d, "fig.json"))
    assert doc.tags.count("rect") == len(d["labels"]["layer"]) * len(d["labels"]["pos"])
