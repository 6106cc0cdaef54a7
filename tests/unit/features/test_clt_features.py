"""A cross-layer transcoder harvested per layer: each layer's feature set reads the hook the CLT (and its graph's
``read_hooks``) reads, encodes exactly as the CLT, writes the sum of its decoder rows; a graph built with the CLT
then gets labels and working feature links from the database; bad input gives clear errors."""

from __future__ import annotations

import json
from urllib.parse import unquote

import httpx
import pytest
import torch
from typer.testing import CliRunner

from mechscope.attribution.codes import layer_codes
from mechscope.attribution.export import graph_json
from mechscope.attribution.graph import build_graph, prune
from mechscope.cli.main import app as cli
from mechscope.dictionaries import io
from mechscope.dictionaries.clt import CLTConfig, CrossLayerTranscoder
from mechscope.errors import ConfigError
from mechscope.features.db import FeatureDB
from mechscope.features.harvest import HarvestConfig, Harvester
from mechscope.features.source import clt_layer_features, dictionary_features
from mechscope.features.stats import StatsConfig
from mechscope.web import pages
from mechscope.web.app import create_app
from mechscope.web.graph_page import feature_labels, graph_result
from mechscope.web.model_ops import Steering
from mechscope.web.server import serving
from tests.conftest import tiny_model
from tests.unit.features import helpers

N_LAYERS, D, D_SAE = 2, 32, 12


def _clt(k: int | None = None, scales: bool = True, seed: int = 0) -> CrossLayerTranscoder:
    """A random CLT on the tiny model (2 layers, d_model 32) with non-trivial input/output scales."""
    extra = dict(input_scale=1.7, output_scale=0.6, layer_output_scales=(2.0, 0.25)) if scales else {}
    clt = CrossLayerTranscoder(CLTConfig(d_in=D, d_out=D, d_sae=D_SAE, n_layers=N_LAYERS, k=k, seed=seed,
                                         **extra))  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(seed + 3)
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.4)
        clt.b_enc.add_(0.3)  # enough features fire on the tiny model's activations
    return clt.eval()


@pytest.mark.parametrize("k", [None, 3])
def test_encode_and_write_direction_are_the_clts(k):
    model, clt = helpers.model(), _clt(k=k)
    x = torch.randn(40, N_LAYERS, D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want_acts = clt.encode(x)  # [40 n_layers d_sae], the CLT's own encoder (TopK per layer)
    codes = layer_codes(model, clt)
    src_tgt = [(s, t) for s in range(N_LAYERS) for t in range(s, N_LAYERS)]
    unit = [0.6 * 2.0, 0.6 * 0.25]  # output_scale * layer_output_scales[t]
    for layer in range(N_LAYERS):
        fs = clt_layer_features(model, clt, layer, "myclt")
        assert fs.name == f"myclt:L{layer}" and fs.kind == "clt" and fs.n_features == D_SAE
        assert fs.hook == f"blocks.{layer}.ln2.hook_normalized" == codes[layer].read_hook  # the graph's read_hooks
        got = fs.encode(x[:, layer])
        assert torch.allclose(got, want_acts[:, layer], atol=1e-6)
        assert (got > 0).any() and (got == 0).any()
        if k is not None:
            assert int((got > 0).sum(-1).max()) <= k
        # decoder rows written into every target t >= layer, each in model units (divided by its scale)
        want_dir = sum(clt.W_dec[i].detach() / unit[t] for i, (s, t) in enumerate(src_tgt) if s == layer)
        assert torch.allclose(fs.directions, want_dir, atol=1e-6)
        assert fs.in_residual and fs.config["clt_layer"] == layer
    assert not torch.allclose(clt_layer_features(model, clt, 0, "c").directions,
                              clt.W_dec[0].detach() / unit[0])  # layer 0 also writes layer 1


def test_bad_input_gives_clear_errors():
    model, clt = helpers.model(), _clt()
    for bad in (2, -1):
        with pytest.raises(ConfigError, match=r"layers 0\.\.1; layer .* out of range"):
            clt_layer_features(model, clt, bad, "c")
    with pytest.raises(ConfigError, match="not a cross-layer transcoder"):
        clt_layer_features(model, helpers.dictionary(), 0, "sae")
    with pytest.raises(ConfigError, match="harvest it per layer"):
        dictionary_features(model, clt, "c")
    with pytest.raises(ConfigError, match="steering supports SAE latents and neurons"):
        Steering(kind="clt", hook="blocks.0.ln2.hook_normalized", feature=0, mode="add", value=1.0)


def test_clt_graph_gets_labels_and_links_from_the_database(tmp_path):
    model, clt, toks = helpers.model(), _clt(), helpers.tokens(12, 12)
    db = FeatureDB.open(tmp_path / "f.db")
    cfg = HarvestConfig(n_tokens=12 * 11, seq_len=12, batch_size=6, n_logits=3, n_neighbours=2,
                        stats=StatsConfig(top_k=3, reservoir=4, n_quantiles=2, n_bins=6, seed=0))
    for layer in range(N_LAYERS):
        fs = clt_layer_features(model, clt, layer, "myclt")
        Harvester(model, fs, db, cfg, model_name="tiny", state_dir=tmp_path / "state", tokens=toks).run(progress=False)
    rows = {d["name"]: d for d in db.dictionaries()}
    assert {n: r["hook"] for n, r in rows.items()} == {f"myclt:L{i}": f"blocks.{i}.ln2.hook_normalized"
                                                        for i in range(N_LAYERS)}
    # a real graph of the CLT, saved as `mechscope attribute graph` saves it (read_hooks included)
    prompt = toks[0, :8]
    g = build_graph(model, prompt, clt, batch_size=32)
    pg = prune(g, 0.99, 0.99)
    data = graph_json(g, pg, [str(int(t)) for t in prompt], [str(int(t)) for t in g.logit_tokens])
    data["read_hooks"] = {str(lc.layer): lc.read_hook for lc in layer_codes(model, clt)}
    (tmp_path / "graph.json").write_text(json.dumps(data))
    graph = graph_result(tmp_path / "graph.json")
    assert graph is not None
    feats = [n["id"] for n in graph["nodes"] if ".f" in n["id"].split("@")[0]]
    assert {f.split(".")[0] for f in feats} == {"m0", "m1"}  # feature nodes of both CLT layers
    layer, feat = feats[-1].split("@")[0].split(".f")
    db.put_explanation(f"myclt:L{layer[1:]}", int(feat), "test", "closing brackets")
    labels = feature_labels(graph, db.dictionaries(), db.explanations, pages.link)
    assert set(labels) == set(feats)
    assert labels[feats[-1]] == ("closing brackets", f"/features/myclt%3AL{layer[1:]}/{feat}")
    db.close()
    # the links resolve in the web app (the set name survives the URL)
    with serving(create_app(tmp_path / "f.db", model=model)) as url:
        for node in (feats[0], feats[-1]):
            r = httpx.get(url + labels[node][1], timeout=30)
            assert r.status_code == 200 and unquote(labels[node][1].split("/")[2]) in r.text


def test_cli_harvests_a_clt_per_layer_and_refuses_misuse(tmp_path):
    model = tiny_model("llama", d_vocab=300)
    model.save(tmp_path / "model")
    io.save(_clt(), tmp_path / "clt")
    io.save(helpers.dictionary(), tmp_path / "sae")
    (tmp_path / "c.txt").write_text("def f(x):\n    return [x, {x: 1}]\n" * 40)
    base = ["features", "harvest", "--db", str(tmp_path / "f.db"), "--model", str(tmp_path / "model"),
            "--corpus", str(tmp_path / "c.txt"), "--tokenizer", "bytes", "--tokens", "200", "--seq-len", "16",
            "--batch-size", "4"]
    r = CliRunner().invoke(cli, [*base, "--dictionary", str(tmp_path / "clt")])
    assert r.exit_code == 2 and "is a cross-layer transcoder; pass --layers all or --layers L1,L2" in r.output
    r = CliRunner().invoke(cli, [*base, "--dictionary", str(tmp_path / "sae"), "--layers", "all"])
    assert r.exit_code == 2 and "--layers applies to a cross-layer transcoder" in r.output
    for bad in ("2", "0,x", ""):
        r = CliRunner().invoke(cli, [*base, "--dictionary", str(tmp_path / "clt"), "--layers", bad])
        assert r.exit_code == 2 and "--layers must be 'all' or layers like 0,2,5-7 in 0..1" in r.output
    r = CliRunner().invoke(cli, [*base, "--dictionary", str(tmp_path / "clt"), "--layers", "1", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.rindex('[{"run"'):])  # after the progress bar (stderr)
    assert [s["dictionary"] for s in out] == ["clt:L1"] and out[0]["n_tokens"] >= 200
    r = CliRunner().invoke(cli, [*base, "--dictionary", str(tmp_path / "clt"), "--layers", "all", "--name", "c",
                                 "--json"])
    assert r.exit_code == 0, r.output
    db = FeatureDB.open(tmp_path / "f.db", read_only=True)
    sets = {d["name"]: d for d in db.dictionaries()}
    assert set(sets) == {"clt:L1", "c:L0", "c:L1"}
    assert sets["c:L0"]["kind"] == "clt" and sets["c:L0"]["config"]["path"] == str((tmp_path / "clt").resolve())
    db.close()
    # geometry recomputes a CLT layer's decoder map from the recorded path
    r = CliRunner().invoke(cli, ["features", "geometry", "--db", str(tmp_path / "f.db"), "--dictionary", "c:L1",
                                 "--model", str(tmp_path / "model"), "--clusters", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["features"] == D_SAE
