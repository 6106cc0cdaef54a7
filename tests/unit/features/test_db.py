"""The feature database: the same schema and queries on SQLite and on a real PostgreSQL; version checks."""

from __future__ import annotations

import sqlite3

import pytest

from mechscope.errors import FeatureDBError
from mechscope.features.db import FeatureDB
from mechscope.features.harvest import HarvestConfig, Harvester
from mechscope.features.source import dictionary_features
from mechscope.features.stats import StatsConfig
from tests.unit.features import helpers
from tests.unit.features.postgres import postgres_server


def _fill(db: FeatureDB, tmp_path) -> None:
    model = helpers.model()
    fs = dictionary_features(model, helpers.dictionary(), "tiny-sae")
    cfg = HarvestConfig(n_tokens=200, seq_len=16, batch_size=4, n_logits=3, n_neighbours=3,
                        stats=StatsConfig(top_k=4, reservoir=8, n_quantiles=4, left=3, right=2, n_bins=8))
    Harvester(model, fs, db, cfg, model_name="tiny", state_dir=tmp_path / "state",
              tokens=helpers.tokens(16, 16)).run(progress=False)
    with db.transaction():
        db.put_explanation("tiny-sae", 3, "scripted", "the letter <q> & 'quotes'")
        db.put_score("tiny-sae", 3, "scripted", "detection", 0.9, 20, {"tp": 9})
        db.put_explanation("tiny-sae", 5, "scripted", "Punctuation marks")
        db.put_score("tiny-sae", 5, "scripted", "detection", 0.6, 20, {})


def _check(db: FeatureDB) -> None:
    assert db.count("features") == 24
    f = db.feature("tiny-sae", 3)
    assert f is not None and f["explanations"][0]["text"] == "the letter <q> & 'quotes'"
    assert f["scores"][0]["details"] == {"tp": 9}
    assert len(f["top"]) > 0 and isinstance(f["top"][0]["tokens"], list)
    assert db.search("100%") == [] and db.search("_") == []  # wildcards are matched literally
    hits = db.search("LETTER")
    assert [(r["dictionary"], r["feature"]) for r in hits] == [("tiny-sae", 3)]
    by_score = db.search(sort="score", limit=3)
    assert [r["feature"] for r in by_score[:2]] == [3, 5] and by_score[2]["score"] is None
    by_density = db.search(limit=24)
    assert [r["density"] for r in by_density] == sorted((r["density"] for r in by_density), reverse=True)
    assert db.feature("tiny-sae", 999) is None
    with pytest.raises(FeatureDBError, match="sort must be"):
        db.search(sort="nope")


def test_sqlite_roundtrip_and_wal(tmp_path):
    db = FeatureDB.open(tmp_path / "f.db")
    _fill(db, tmp_path)
    _check(db)
    assert db.query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    ro = FeatureDB.open(tmp_path / "f.db", read_only=True)
    _check(ro)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ro.execute("DELETE FROM features")


def test_postgresql_runs_the_same_schema(tmp_path):
    with postgres_server() as url:
        db = FeatureDB.open(url)
        _fill(db, tmp_path)
        _check(db)
        sqlite_db = FeatureDB.open(tmp_path / "s.db")
        _fill(sqlite_db, tmp_path / "s")
        pg_rows, sq_rows = db.dump(), sqlite_db.dump()
        assert pg_rows["examples"] == sq_rows["examples"]
        assert [r["feature"] for r in pg_rows["features"]] == [r["feature"] for r in sq_rows["features"]]
        ro = FeatureDB.open(url, read_only=True)
        _check(ro)
        with pytest.raises(Exception, match="read-only"):
            ro.execute("DELETE FROM features")
        db.close()
        ro.close()


def test_unknown_schema_version_is_refused(tmp_path):
    db = FeatureDB.open(tmp_path / "f.db")
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()
    with pytest.raises(FeatureDBError, match="schema version '99'.*reads version 1"):
        FeatureDB.open(tmp_path / "f.db")


def test_foreign_sqlite_file_and_missing_file(tmp_path):
    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE things (x)")
    conn.commit()
    conn.close()
    with pytest.raises(FeatureDBError, match="not a mechscope feature database"):
        FeatureDB.open(tmp_path / "other.db")
    with pytest.raises(FeatureDBError, match="does not exist"):
        FeatureDB.open(tmp_path / "missing.db", read_only=True)
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(FeatureDBError):
        FeatureDB.open(tmp_path / "junk.db")
