"""Fixtures of the feature tests: a running web app over a database full of markup-like text."""

from __future__ import annotations

import json

import pytest

from mechscope.dictionaries.io import save
from mechscope.web.app import create_app
from mechscope.web.server import serving
from tests.unit.features import helpers
from tests.unit.features.escaping import DICT, nasty_db


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    db = nasty_db(tmp / "f.db", tmp / "s")
    ddir = save(helpers.dictionary(), tmp / "dict")
    db.execute("UPDATE dictionaries SET config = ? WHERE name = ?",
               (json.dumps({"path": str(ddir)}), DICT))
    db.close()
    runs = tmp / "runs"
    (runs / "patching").mkdir(parents=True)
    (runs / "patching" / "result.json").write_text('{"ok": 1}')
    (tmp / "secret.txt").write_text("SECRET")
    (runs / "patching" / "escape").symlink_to(tmp)
    app = create_app(tmp / "f.db", model=helpers.model(), runs=[runs])
    with serving(app) as url:
        yield url, tmp


