"""Autointerp: scorers on planted features with a scripted model; the HTTP client against the real
``serve-llm`` server; clear errors."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from mechscope.cli.main import app
from mechscope.errors import ExplainerError
from mechscope.features.autointerp.clients import HTTPChat, LocalChat
from mechscope.features.autointerp.run import explain_features, score_features
from mechscope.features.db import FeatureDB
from mechscope.web.llm_server import create_llm_app
from mechscope.web.server import free_port, serving
from tests.unit.features import helpers

WORDS = ["apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "chair", "ocean", "maple"]
FILLER = ["the", "a", "of", "and", "to", "in", "is", "was", "it", "on", "with", "as"]


class Scripted:
    """A 'language model' that follows the prompts literally: explanations name the token marked most often;
    an explanation "the word 'X'" is present in a text iff the token X is in it; marks match iff all are X."""

    name = "scripted"

    def chat(self, messages, max_tokens=64):
        text = messages[-1]["content"]
        if "What do the marked tokens have in common?" in text:
            marked = re.findall(r"<<(.*?)>>", text)
            return f"the word '{max(set(marked), key=marked.count).strip()}'"
        word = re.search(r"described as: the word '(.*?)'", text).group(1)
        snippet = text.split("Text: ", 1)[1].split("\n", 1)[0]
        if "marked tokens match" in text:
            marks = [m.strip() for m in re.findall(r"<<(.*?)>>", snippet)]
            return "1" if marks and all(m == word for m in marks) else "0"
        return "1" if word in snippet.split() else "0"


def planted_db(path) -> FeatureDB:
    """Feature i fires exactly on the word WORDS[i], planted in sentences of filler words."""
    import random

    rng = random.Random(0)
    db = FeatureDB.open(path)
    with db.transaction():
        db.put_model("m", {})
        db.put_dictionary("d", "m", "blocks.0.hook_resid_post", "sae", len(WORDS), {})
        rows, ex = [], []
        for f, w in enumerate(WORDS):
            rows.append(("d", f, 0.01, 0.1, 5.0, 10, json.dumps({"edges": [0, 1], "counts": [1]}), None, None, None,
                         None))
            for k in range(20):
                toks = [rng.choice(FILLER) for _ in range(8)]
                focus = rng.randrange(8)
                toks[focus] = w
                acts = [5.0 - 0.1 * k if t == w else 0.0 for t in toks]
                kind, q = ("top", None) if k < 10 else ("quantile", k % 4)
                ex.append(("d", f, kind, k, q, acts[focus], f * 1000 + k, focus, json.dumps([f" {t}" for t in toks]),
                           json.dumps(acts)))
        db.executemany("INSERT INTO features VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO examples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", ex)
    return db


def test_planted_explanations_score_one_and_wrong_ones_chance(tmp_path):
    db = planted_db(tmp_path / "f.db")
    client = Scripted()
    got = explain_features(db, "d", [0, 1, 2], client, progress=False)
    assert got == {0: "the word 'apple'", 1: "the word 'river'", 2: "the word 'stone'"}
    good = score_features(db, "d", [0, 1, 2], client, n=10, progress=False)
    for f in (0, 1, 2):
        assert good[f]["detection"] >= 0.95 and good[f]["fuzzing"] >= 0.95
    with db.transaction():  # wrong explanations: a word unrelated to the feature
        for f in (0, 1, 2):
            db.put_explanation("d", f, "scripted", "the word 'zebra'")
    bad = score_features(db, "d", [0, 1, 2], client, n=10, progress=False)
    for f in (0, 1, 2):
        assert 0.4 <= bad[f]["detection"] <= 0.6 and 0.4 <= bad[f]["fuzzing"] <= 0.6
    row = db.feature("d", 0)
    assert {s["method"] for s in row["scores"]} == {"detection", "fuzzing"}


def test_http_client_round_trips_through_serve_llm():
    model = helpers.model()
    messages = [{"role": "user", "content": "abc abc ab"}]
    local = LocalChat(model, "tiny").chat(messages, max_tokens=6)
    with serving(create_llm_app(model, model_name="tiny")) as url:
        client = HTTPChat(url, "tiny")
        assert client.chat(messages, max_tokens=6) == local and len(local) == 6
        import httpx

        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny", "messages": messages, "max_tokens": 4})
        body = r.json()
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] == 4
        assert body["choices"][0]["finish_reason"] == "length"
        assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == "tiny"
        bad = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "123"}]})
        assert bad.status_code == 400 and "vocabulary" in bad.json()["error"]["message"]
        assert httpx.post(f"{url}/v1/chat/completions", json={"messages": messages, "stream": True}).status_code == 400
        client.close()


def test_steered_serve_llm_changes_the_reply():
    from mechscope.web.model_ops import Steering

    model = helpers.model()
    messages = [{"role": "user", "content": "abc abc ab"}]
    plain = LocalChat(model).chat(messages, max_tokens=6)
    s = Steering(kind="neurons", hook="blocks.1.mlp.hook_post", feature=3, mode="clamp", value=40.0)
    with serving(create_llm_app(model, steering=s)) as url:
        assert HTTPChat(url).chat(messages, max_tokens=6) != plain


def test_unreachable_explainer_url_is_a_clear_error(tmp_path):
    port = free_port()
    client = HTTPChat(f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(ExplainerError, match=f"cannot reach the explainer at http://127.0.0.1:{port}"):
        client.chat([{"role": "user", "content": "hi"}])
    planted_db(tmp_path / "f.db").close()
    res = CliRunner().invoke(app, ["features", "explain", "--db", str(tmp_path / "f.db"), "--dictionary", "d",
                                   "--features", "0", "--explainer-url", f"http://127.0.0.1:{port}"])
    assert res.exit_code == 2 and "cannot reach the explainer" in res.output


def test_top_token_rule_scores_planted_token_features_perfectly(tmp_path):
    from mechscope.features.autointerp.rules import TopTokenRule

    db = planted_db(tmp_path / "f.db")
    rule = TopTokenRule()
    got = explain_features(db, "d", [0, 4], rule, progress=False)
    assert got == {0: "the token ' apple'", 4: "the token ' tiger'"}
    scores = score_features(db, "d", [0, 4], rule, n=10, progress=False)
    assert all(v == 1.0 for s in scores.values() for v in s.values())
