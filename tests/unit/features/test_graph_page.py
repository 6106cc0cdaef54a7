"""The interactive attribution-graph page: a real graph of a tiny model (``mechscope attribute graph --out``, exact
transcoders, a vocabulary with markup words) served from a run directory, labelled from a feature database with
hostile explanations; checked over HTTP (escaping, counts, labels, traversal, malformed files) and in Chromium
(click a node and an edge, see the details and the QK attribution; nothing injected runs)."""

from __future__ import annotations

import json
import os

import httpx
import pytest
import torch
from typer.testing import CliRunner

from mechscope.attribution.graph import build_graph, prune
from mechscope.attribution.qk import main_attention_edge
from mechscope.attribution.qk_edges import attention_edges
from mechscope.cli.main import app as cli
from mechscope.dictionaries import io
from mechscope.features.db import FeatureDB
from mechscope.tokens import Tokenizer
from mechscope.web.app import create_app
from mechscope.web.graph_page import DRAWN_EDGES, graph_result
from mechscope.web.screenshots import CHROMIUM, browser_page
from mechscope.web.server import serving
from tests.unit.attribution.test_graph import exact_transcoders, relu_model
from tests.unit.features.escaping import inspect

TOK = "</script><script>alert('tok')</script>"
WORDS = [f"w{i}" for i in range(49)]
WORDS[5], WORDS[8] = TOK, "<!--"
PROMPT = f"w3 w17 {TOK} w40 <!-- w2"
LABEL = "<img src=x onerror=alert(1)> <script>alert('label')</script> & <!-- ../"
TC_DICT = "tc1<b>\"'"
HOOK1, HOOK2 = "blocks.1.ln2.hook_normalized", "blocks.2.ln2.hook_normalized"


def _tiny():
    model = relu_model().float()
    model.tokenizer = Tokenizer.words(WORDS, bos="<s>")
    return model


@pytest.fixture(scope="module")
def graph_site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("graph")
    model = _tiny()
    model.save(tmp / "model")
    for i, t in enumerate(exact_transcoders(model.double())):
        io.save(t.to(torch.float32).with_config(dtype="float32"), tmp / "tcs" / f"layer{i}")
    run = tmp / "run"
    res = CliRunner().invoke(cli, ["attribute", "graph", "--model", str(tmp / "model"), "--prompt", PROMPT,
                                   "--transcoders", str(tmp / "tcs"), "--out", str(run / "g"), "--qk-edges", "6",
                                   "--json"])
    assert res.exit_code == 0, res.output
    saved = json.loads((run / "g" / "graph.json").read_text())
    bad = dict(saved, edges=[*saved["edges"], {"source": "nowhere", "target": saved["nodes"][0]["id"], "weight": 1}])
    (run / "bad").mkdir()
    (run / "bad" / "graph.json").write_text(json.dumps(bad))
    (tmp / "secret").mkdir()
    (tmp / "secret" / "graph.json").write_text((run / "g" / "graph.json").read_text())
    db = FeatureDB.open(tmp / "f.db")
    with db.transaction():
        db.put_model("tiny", {})
        hist = '{"edges": [], "counts": []}'
        for name, hook in ((TC_DICT, HOOK1), ("tc2-a", HOOK2), ("tc2-b", HOOK2)):  # layer 2: ambiguous, no labels
            db.put_dictionary(name, "tiny", hook, "sae", 48, {})
            db.executemany("INSERT INTO features (dictionary, feature, density, mean_act, max_act, n_fired, histogram)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?)", [(name, f, 0.1, 1.0, 2.0, 3, hist) for f in range(48)])
            for f in range(48):
                db.put_explanation(name, f, "scripted", f"{LABEL} #{f}")
    db.close()
    with serving(create_app(tmp / "f.db", runs=[run])) as url:
        yield url, saved


def _feature_nodes(saved, layer):
    return [i for i, n in enumerate(saved["nodes"]) if n["id"].startswith(f"m{layer}.f")]


def test_cli_stores_qk_of_the_strongest_attention_edges(graph_site):
    _, saved = graph_site
    assert saved["read_hooks"] == {"0": "blocks.0.ln2.hook_normalized", "1": HOOK1, "2": HOOK2}
    qk = saved["qk_edges"]
    assert 1 <= len(qk) <= 6
    pos = {n["id"]: n["pos"] for n in saved["nodes"]}
    weights = {(e["source"], e["target"]): e["weight"] for e in saved["edges"]}
    for q in qk:
        assert pos[q["source"]] == q["key_pos"] != q["query_pos"] == pos[q["target"]]
        assert q["weight"] == weights[(q["source"], q["target"])]
        assert abs(q["sum_of_terms"] - q["score"]) <= 1e-3 * max(1.0, abs(q["score"]))
    cross = sorted((abs(w) for (s, t), w in weights.items() if pos[s] != pos[t]), reverse=True)
    assert abs(qk[0]["weight"]) == cross[0]  # the strongest cross-position edge comes first


def test_attention_edges_agree_with_the_main_edge():
    model = _tiny()
    tokens = model.tokenizer.to_tokens(PROMPT)[0]
    tcs = exact_transcoders(model.double())
    g = build_graph(model.double(), tokens, tcs, batch_size=16)
    pg = prune(g)
    edges = attention_edges(model.double(), tokens, g, pg, 5)
    assert edges and edges[0][2] == main_attention_edge(model.double(), tokens, g, pg)
    layer, _ = g.node_layer_pos()
    for t, s, (ly, _, _, _) in edges:
        assert int(layer[s]) + 1 <= ly <= min(int(layer[t]), model.cfg.n_layers - 1)
    assert attention_edges(model.double(), tokens, g, pg, 0) == []


def test_graph_page_over_http_is_escaped_labelled_and_path_safe(graph_site):
    url, saved = graph_site
    with httpx.Client(base_url=url, timeout=30) as c:
        listing = c.get("/runs/0/g/").text
        assert "graph.json (attribution graph)" in listing and "graph.json?view=1" in listing
        assert "(attribution graph)" not in c.get("/runs/0/bad/").text
        r = c.get("/runs/0/g/graph.json", params={"view": 1})
        assert r.status_code == 200
        doc = inspect(r.text)
        assert doc.tags.count("script") == 2  # the JSON data block and the page's own script, nothing injected
        for raw in ("<script>alert", "<img src=x", "<!--"):
            assert raw not in r.text, raw
        text = "".join(doc.text)
        assert TOK[:14] in text and "alert('label')" in text  # shown as text (SVG token label, node titles)
        assert doc.tags.count("circle") + doc.tags.count("rect") == len(saved["nodes"])
        assert doc.tags.count("line") == min(len(saved["edges"]), DRAWN_EDGES)
        data = json.loads(r.text.split('id="graph-data">', 1)[1].split("</script>", 1)[0])
        assert data["tokens"][3] == TOK  # the JSON block decodes to the exact strings
        labelled = {saved["nodes"][i]["id"] for i in _feature_nodes(saved, 1)}
        assert labelled and set(data["labels"]) == labelled  # layer 1 by its hook; layer 2 ambiguous; layer 0 none
        some = sorted(labelled)[0]
        feat = int(some.split(".f")[1].split("@")[0])
        assert data["labels"][some] == [f"{LABEL} #{feat}", f"/features/tc1%3Cb%3E%22%27/{feat}"]
        assert c.get("/runs/0/bad/graph.json", params={"view": 1}).status_code == 404
        for bad in ("/runs/0/../secret/graph.json?view=1", "/runs/0/%2e%2e/secret/graph.json?view=1",
                    "/runs/1/g/graph.json?view=1"):
            assert c.get(bad).status_code == 404, bad


def test_malformed_graph_files_are_not_recognised(graph_site, tmp_path):
    _, saved = graph_site
    p = tmp_path / "graph.json"
    cases = [
        {k: v for k, v in saved.items() if k != "nodes"},
        dict(saved, nodes=[dict(saved["nodes"][0], layer=True), *saved["nodes"][1:]]),
        dict(saved, nodes=[*saved["nodes"], saved["nodes"][0]]),  # duplicate id
        dict(saved, tokens=[1, 2]),
        dict(saved, nodes=[dict(saved["nodes"][0], pos=10**9), *saved["nodes"][1:]]),  # would size the picture
        dict(saved, tokens=["x"] * 5000),
        "[]",
    ]
    for case in cases:
        p.write_text(json.dumps(case) if not isinstance(case, str) else case)
        assert graph_result(p) is None
    p.write_text(json.dumps(saved).replace(str(saved["edges"][0]["weight"]), "NaN", 1))
    assert graph_result(p) is None
    p.write_text(json.dumps(dict(saved, qk_edges=[{"layer": "x"}, *saved["qk_edges"]], qk_main_edge=5)))
    g = graph_result(p)
    assert g is not None and len(g["qk_edges"]) == len(saved["qk_edges"]) and g["qk_main_edge"] is None


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
def test_graph_page_in_a_browser(graph_site, tmp_path):
    pytest.importorskip("playwright")
    url, saved = graph_site
    qk = saved["qk_edges"][0]
    k = next(i for i, e in enumerate(saved["edges"]) if (e["source"], e["target"]) == (qk["source"], qk["target"]))
    with browser_page() as page:
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(url + "/runs/0/g/graph.json?view=1")
        assert page.locator("#graph [data-n]").count() == len(saved["nodes"])
        # a labelled feature node: its details, the hostile label as text, its feature-page link
        i = _feature_nodes(saved, 1)[0]
        node = saved["nodes"][i]
        page.click(f'#graph [data-n="{i}"]')
        assert page.inner_text("#details h2") == node["id"]
        feat = int(node["id"].split(".f")[1].split("@")[0])
        assert page.inner_text("#node-label .label") == f"{LABEL} #{feat}"
        assert page.locator("#details img").count() == 0 and page.locator("#details script").count() == 0
        assert page.get_attribute("#node-label a", "href") == f"/features/tc1%3Cb%3E%22%27/{feat}"
        assert page.locator("#node-facts").inner_text().count("activation") == 1
        # the target of the strongest attention edge; the edge from its input list; its QK attribution
        page.click(f'#graph [data-n="{next(j for j, n in enumerate(saved["nodes"]) if n["id"] == qk["target"])}"]')
        page.click(f'#details a.edge-link[data-e="{k}"]')
        assert page.inner_text("#details h2") == f"{qk['source']} -> {qk['target']}"
        assert f"layer {qk['layer']} head {qk['head']}" in page.inner_text("#qk h3")
        assert page.locator("#qk-terms tr").count() == 1 + len(qk["top_terms"])
        page.screenshot(path=str(tmp_path / "graph.png"))
        # an edge clicked on the picture itself (lines overlap, so the click is dispatched to the element)
        pos = {n["id"]: n["pos"] for n in saved["nodes"]}
        same = next(j for j, e in enumerate(saved["edges"][:DRAWN_EDGES]) if pos[e["source"]] == pos[e["target"]])
        page.locator(f'#graph line[data-e="{same}"]').dispatch_event("click")
        assert "Same position" in page.inner_text("#qk")
        # the token row shows the markup word as text, and nothing injected ever ran
        assert TOK[:14] in (page.text_content("#graph") or "")
        assert dialogs == [] and page.evaluate("document.title") == "graph g"
