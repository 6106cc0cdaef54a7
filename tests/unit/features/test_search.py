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


def fill(d: FeatureDB) -> None:
    """Both explanation sets of ``TEXTS`` (the second upper-cased), densities and one score per feature."""
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


@pytest.fixture
def db(tmp_path):
    d = FeatureDB.open(tmp_path / "s.db")
    fill(d)
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


def reference_search(db, q, sort, dictionary="", limit=1000, offset=0):
    """The search, brute force in Python from the table dump (SQLite's LOWER folds ASCII only)."""
    fold = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
    dump = db.dump()
    newest, best, hit = {}, {}, set()
    for e in sorted(dump["explanations"], key=lambda e: e["explainer"], reverse=True):
        key = (e["dictionary"], e["feature"])
        if key not in newest or e["created_at"] >= newest[key]["created_at"]:
            newest[key] = e
        if q.lower() in e["text"].translate(fold):  # the query is lowered by Python, the text by SQLite
            hit.add(key)
    for s in dump["scores"]:
        key = (s["dictionary"], s["feature"])
        best[key] = max(best.get(key, s["value"]), s["value"])
    rows = [{"dictionary": f["dictionary"], "feature": f["feature"], "density": f["density"], "mean_act": f["mean_act"],
             "max_act": f["max_act"], "score": best.get((f["dictionary"], f["feature"])),
             "explanation": newest[(f["dictionary"], f["feature"])]["text"] if (f["dictionary"], f["feature"]) in newest
             else None} for f in dump["features"]
            if (not q or (f["dictionary"], f["feature"]) in hit) and dictionary in ("", f["dictionary"])]
    key = {"density": lambda r: (-r["density"], r["dictionary"], r["feature"]),
           "feature": lambda r: (r["dictionary"], r["feature"]),
           "score": lambda r: (-(r["score"] if r["score"] is not None else -1.0), r["dictionary"], r["feature"])}[sort]
    return sorted(rows, key=key)[offset:offset + limit]


def test_search_equals_a_brute_force_reference(db):
    db.put_model("m2", {})
    db.put_dictionary("e", "m2", "h", "sae", 3, {})
    hist = '{"edges": [], "counts": []}'
    db.executemany("INSERT INTO features (dictionary, feature, density, mean_act, max_act, n_fired, histogram) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)", [("e", f, 0.05, 1.0, 2.0, 5, hist) for f in range(3)])
    db.put_explanation("e", 1, "e1", "object of e")
    db.put_score("e", 1, "e1", "fuzzing", 0.95, 10, {})
    db.put_score("d", 3, "e1", "fuzzing", 0.99, 10, {})  # a second score: the best one counts
    for q in ["", *QUERIES]:
        for sort in ("density", "score", "feature"):
            for dictionary, limit, offset in (("", 1000, 0), ("d", 1000, 0), ("e", 1000, 0), ("", 5, 3)):
                got = db.search(q, sort=sort, dictionary=dictionary, limit=limit, offset=offset)
                assert got == reference_search(db, q, sort, dictionary, limit, offset), (q, sort, dictionary, offset)


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
