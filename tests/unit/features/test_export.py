"""Static feature pages: complete content, and every corpus / user string rendered as text."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mechscope.cli.main import app
from tests.unit.features.escaping import DICT, EXPLANATION, inspect, nasty_db


def test_export_escapes_everything(tmp_path):
    db = nasty_db(tmp_path / "f.db", tmp_path / "s")
    fired = [r["feature"] for r in db.search(dictionary=DICT, limit=100) if r["density"] > 0][:3]
    res = CliRunner().invoke(app, ["features", "export", "--db", str(tmp_path / "f.db"), "--dictionary", DICT,
                                   "--features", ",".join(map(str, fired)), "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    paths = json.loads(res.output)
    assert len(paths) == 1 + len(fired)
    for p in paths:
        html = Path(p).read_text(encoding="utf-8")
        doc = inspect(html)
        assert "script" not in doc.tags and doc.comments == []
        text = "".join(doc.text)
        assert EXPLANATION in text  # shown literally
        assert DICT in text
    page = inspect(Path(paths[1]).read_text(encoding="utf-8"))
    text = "".join(page.text)
    for piece in ("<", "!", "-", "/", "'", '"', "."):
        assert piece in text  # corpus characters of the examples come through as text
    assert "Max-activating examples" in text and "Top logits" in text and "quantile group" in text


def test_export_unknown_feature_is_a_clear_error(tmp_path):
    nasty_db(tmp_path / "f.db", tmp_path / "s")
    res = CliRunner().invoke(app, ["features", "export", "--db", str(tmp_path / "f.db"), "--dictionary", DICT,
                                   "--features", "999", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "no feature 999" in res.output
