"""Explanation search on a real PostgreSQL (started by the test): the pg_trgm GIN index is created, the planner
answers the search from it, its results equal the sequential LIKE scan's; a role that may not create the extension
falls back to the scan, says so, and returns the same rows."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from mechscope.features.db import FeatureDB
from mechscope.features.schema import TRGM_INDEX
from tests.unit.features.postgres import postgres_server
from tests.unit.features.test_search import QUERIES, TEXTS, fill


def _plan(d: FeatureDB, q: str) -> str:
    d.execute("SET enable_seqscan = off")  # a tiny table: make the planner show whether it *can* use the index
    try:
        rows = d.query("EXPLAIN SELECT feature FROM explanations WHERE LOWER(text) LIKE ? ESCAPE '!'", (f"%{q}%",))
    finally:
        d.execute("RESET enable_seqscan")
    return "\n".join(str(next(iter(r.values()))) for r in rows)


def _other(url: str, user: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}@{parts.hostname}:{parts.port}", path=f"/{dbname}"))


def test_pg_trgm_index_serves_search_and_a_role_without_it_falls_back():
    with postgres_server() as url:
        db = FeatureDB.open(url)
        fill(db)
        assert db.trgm and db.search_index == "pg_trgm"
        assert db.query("SELECT indexdef FROM pg_indexes WHERE indexname = ?", (TRGM_INDEX,))[0]["indexdef"].endswith(
            "USING gin (lower(text) gin_trgm_ops)")
        assert TRGM_INDEX in _plan(db, "object")
        expected = {}
        for q in QUERIES:
            for sort in ("density", "score"):
                indexed = db.search(q, sort=sort, limit=1000)
                assert indexed == db.search(q, sort=sort, limit=1000, use_index=False), (q, sort)
                expected[q, sort] = indexed
        assert {r["feature"] for r in db.search("object", limit=1000)} == {0, 8, 9, 14, 22, 23}
        db.put_explanation("d", 0, "e1", "something else entirely")  # the index follows updates
        assert db.search("entirely", limit=1000) == db.search("entirely", limit=1000, use_index=False) != []
        db.put_explanation("d", 0, "e1", TEXTS[0])
        ro = FeatureDB.open(url, read_only=True)
        assert ro.trgm and ro.search("object", limit=1000) == expected["object", "density"]
        ro.close()

        # a role with its own schema but no CREATE on the database: it may not create the (trusted) extension
        db.execute("CREATE ROLE team_reader LOGIN")
        db.execute("CREATE DATABASE team")
        import psycopg

        with psycopg.connect(_other(url, urlsplit(url).username or "postgres", "team"), autocommit=True) as raw:
            raw.execute("CREATE SCHEMA team_reader AUTHORIZATION team_reader")
        plain = FeatureDB.open(_other(url, "team_reader", "team"))
        assert not plain.trgm and plain.search_index.startswith("none: pg_trgm is not available here")
        assert "permission denied" in plain.search_index and "LIKE scan" in plain.search_index, plain.search_index
        fill(plain)
        for q in ("object", "OBJ", "100%", "_case", "école", "script>"):
            assert plain.search(q, limit=1000) == expected[q, "density"], q
        plain.close()
        db.close()
