"""Explanation search: the FTS5 trigram index path returns exactly what the plain LIKE scan returns, and the
index follows inserts, updates and deletes (triggers); a database without the index is searched with LIKE."""

from __future__ import annotations

import sqlite3

import pytest

from mechscope.features.db import FeatureDB

TEXTS = ["the token 'object'", "Boolean values True/False", "(or ...", "100% of the time", "snake_case names",
         'quoted "phrase" here', "ÉCOLE and école", "master widget", "OBJECT in caps", "objection", "a_b%c",
         "<script>alert('x')</script>", "line\nbreak", "ab"]
QUERIES = ["object", "OBJ", "ob", "o", "100%", "%", "_case", "_", '"phrase"', '"', "école", "ÉCOLE", "é", "or .",
           "script>", "alert('", "line\nb", "ab", "zzz", "e", "  ", "a_b%c", "b%"]


@pytest.fixture
def db(tmp_path):
    d = FeatureDB.open(tmp_path / "s.db")
    with d.transaction():
        d.put_model("m", {})
        d.put_dictionary("d", "m", "h", "sae", len(TEXTS) * 2, {})
        hist = '{"edges": [], "counts": []}'
        d.executemany("INSERT INTO features (dictionary, feature, density, mean_act, max_act, n_fired, histogram) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)", [("d", f, 0.01 * ((7 * f) % 11), 1.0, 2.0, 5, hist)
                                                       for f in range(len(TEXTS) * 2)])
        for f, text in enumerate(TEXTS):
            d.put_explanation("d", f, "e1", text)
            d.put_explanation("d", f + len(TEXTS), "e2", text.upper())
            d.put_score("d", f, "e1", "detection", (f % 5) / 5, 10, {})
    yield d
    d.close()


def test_index_path_equals_like_scan(db):
    assert db.fts and db.search_index == "fts5-trigram"
    for q in QUERIES:
        for sort in ("density", "score", "feature"):
            indexed = db.search(q, sort=sort, limit=1000)
            scanned = db.search(q, sort=sort, limit=1000, use_index=False)
            assert indexed == scanned, (q, sort)
    assert {r["feature"] for r in db.search("object", limit=1000)} == {0, 8, 9, 14, 22, 23}
    assert db.search("zzz") == []


def test_index_follows_updates_and_deletes(db):
    db.put_explanation("d", 0, "e1", "something else entirely")
    db.put_explanation("d", 14, "e2", "OBJECTIVE")
    db.execute("DELETE FROM explanations WHERE dictionary = 'd' AND feature = 8")
    for q in ("object", "entirely", "objective"):
        assert db.search(q, limit=1000) == db.search(q, limit=1000, use_index=False), q
    assert {r["feature"] for r in db.search("object", limit=1000)} == {9, 14, 22, 23}


def test_database_without_index_uses_like(tmp_path, db):
    path = tmp_path / "s.db"
    expected = db.search("object", limit=1000)
    db.close()
    with sqlite3.connect(path) as raw:  # an older file: no FTS table or triggers
        raw.executescript("DROP TRIGGER explanations_fts_ai; DROP TRIGGER explanations_fts_ad; "
                          "DROP TRIGGER explanations_fts_au; DROP TABLE explanations_fts;")
    ro = FeatureDB.open(path, read_only=True)
    assert not ro.fts and ro.search_index.startswith("none") and ro.search("object", limit=1000) == expected
    ro.close()
    rw = FeatureDB.open(path)  # opened writable: the index is created and filled from the table
    assert rw.fts and rw.search("object", limit=1000) == expected
    rw.close()
