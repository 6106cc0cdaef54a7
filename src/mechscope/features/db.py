"""``FeatureDB``: the feature database on SQLite (default, one file in WAL mode) or PostgreSQL (a team server).

``FeatureDB.open("features.db")`` opens (creating if asked) a SQLite file in WAL mode, so readers — the web
app, ``features show`` — keep working while a harvest writes: each reader sees the last committed state, and
a harvest commits its results in one transaction, so no reader ever sees half a dictionary.
``FeatureDB.open("postgresql://...")`` uses psycopg with the same SQL (``schema.py``); ``?`` placeholders are
translated to ``%s``. ``read_only=True`` opens SQLite with ``mode=ro`` and PostgreSQL with read-only
transactions. Rows come back as dicts; JSON columns are decoded by the accessors.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mechscope.errors import FeatureDBError
from mechscope.features.schema import (
    DDL,
    DENSITY_DDL,
    FTS_DDL,
    GEOMETRY_DDL,
    SCHEMA_VERSION,
    TABLES,
    TRGM_DDL,
    TRGM_INDEX,
)

_JSON_COLS = ("histogram", "top_logits", "bottom_logits", "neighbours_cosine", "neighbours_coact", "tokens",
              "acts", "config", "stats", "details")


def now() -> str:
    """UTC timestamp (ISO 8601) as stored in the database."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for col in _JSON_COLS:
        if isinstance(row.get(col), str):
            row[col] = json.loads(row[col])
    return row


class FeatureDB:
    """A connection to a feature database (see the module docstring). Not shared across threads."""

    def __init__(self, conn: Any, backend: str, where: str, read_only: bool) -> None:
        self.conn, self.backend, self.where, self.read_only = conn, backend, where, read_only
        self._depth = 0
        self.has_geometry = True  # the optional geometry table exists (checked on open)
        self.fts = False  # an FTS5 index over explanation text is present (SQLite only; see schema.FTS_DDL)
        self.trgm = False  # a pg_trgm GIN index over LOWER(text) is present (PostgreSQL only; see schema.TRGM_DDL)
        self.search_index = "none: LIKE scan"
        """How explanation search runs: ``fts5-trigram``, ``pg_trgm``, or ``none: <why>`` (a LIKE scan)."""

    # -- opening -------------------------------------------------------------------------------------
    @classmethod
    def open(cls, target: str | Path, *, read_only: bool = False, create: bool = True) -> FeatureDB:
        """Open a SQLite path or a ``postgresql://`` URL; checks (or, writable and empty, creates) the schema."""
        where = str(target)
        if where.startswith(("postgresql://", "postgres://")):
            db = cls._open_pg(where, read_only)
        else:
            db = cls._open_sqlite(Path(where), read_only, create)
        db._check_schema(create=create and not read_only)
        return db

    @classmethod
    def _open_sqlite(cls, path: Path, read_only: bool, create: bool) -> FeatureDB:
        if (read_only or not create) and not path.is_file():
            raise FeatureDBError(f"feature database {path} does not exist; create it with "
                                 "`mechscope features harvest ... --db FILE`")
        try:
            if read_only:
                conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, isolation_level=None,
                                       check_same_thread=False, timeout=30)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.DatabaseError as e:
            raise FeatureDBError(f"{path} is not a usable SQLite database: {e}") from e
        conn.row_factory = sqlite3.Row
        return cls(conn, "sqlite", str(path), read_only)

    @classmethod
    def _open_pg(cls, url: str, read_only: bool) -> FeatureDB:
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError as e:  # pragma: no cover - psycopg is a dev / server extra
            raise FeatureDBError("a PostgreSQL database needs psycopg: pip install 'psycopg[binary]'") from e
        try:
            conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)
        except psycopg.Error as e:
            raise FeatureDBError(f"cannot connect to PostgreSQL at {url}: {e}") from e
        if read_only:
            conn.execute("SET default_transaction_read_only = on")
        return cls(conn, "postgresql", url, read_only)

    def _tables(self) -> set[str]:
        if self.backend == "sqlite":
            rows = self.query("SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            rows = self.query("SELECT table_name AS name FROM information_schema.tables WHERE table_schema = "
                              "current_schema()")
        return {r["name"] for r in rows}

    def _check_schema(self, *, create: bool) -> None:
        tables = self._tables()
        if "meta" not in tables:
            if tables:
                raise FeatureDBError(f"{self.where} is not a mechscope feature database (tables: "
                                     f"{', '.join(sorted(tables)[:8])}); use a new file")
            if not create:
                raise FeatureDBError(f"{self.where} is empty: not a mechscope feature database yet")
            with self.transaction():
                for stmt in DDL:
                    self.execute(stmt)
                self.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("schema_version", str(SCHEMA_VERSION)))
                self.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("created_by", "mechscope"))
            self._ensure_fts()
            self._ensure_trgm()
            return
        row = self.query("SELECT value FROM meta WHERE key = 'schema_version'")
        version = row[0]["value"] if row else None
        if version != str(SCHEMA_VERSION):
            raise FeatureDBError(f"{self.where} has feature-database schema version {version!r}; this mechscope "
                                 f"reads version {SCHEMA_VERSION} only (tables {', '.join(TABLES)}); "
                                 "re-harvest into a new file or use the mechscope that wrote it")
        self.has_geometry = "geometry" in tables
        if not self.has_geometry and not self.read_only:
            self.execute(GEOMETRY_DDL)
            self.has_geometry = True
        if not self.read_only:
            self.execute(DENSITY_DDL)
        if "explanations_fts" in tables:
            self.fts = self.backend == "sqlite"
            self.search_index = "fts5-trigram" if self.fts else self.search_index
        elif not self.read_only:
            self._ensure_fts()
        self._ensure_trgm()

    def _ensure_fts(self) -> None:
        """Create (and fill from ``explanations``) the optional FTS5 index; skipped where FTS5 is unavailable."""
        if self.backend != "sqlite" or self.read_only:
            return
        try:
            with self.transaction():
                for stmt in FTS_DDL:
                    self.execute(stmt)
                self.execute("INSERT INTO explanations_fts(explanations_fts) VALUES ('rebuild')")
        except sqlite3.OperationalError as e:  # a SQLite built without FTS5 / trigram: search falls back to LIKE
            self.search_index = f"none: this SQLite has no FTS5 trigram tokenizer ({e}); LIKE scan"
            return
        self.fts = True
        self.search_index = "fts5-trigram"

    def _ensure_trgm(self) -> None:
        """On PostgreSQL: find (or, writable, create) the pg_trgm GIN index that serves ``LOWER(text) LIKE
        '%q%'``. Where the extension is not installed or this role may not create it, search stays a LIKE scan
        (same results, slower) and ``search_index`` says why."""
        if self.backend != "postgresql":
            return
        import psycopg

        if not self._has_trgm_index() and not self.read_only:
            try:
                for stmt in TRGM_DDL:
                    self.execute(stmt)
            except psycopg.Error as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                self.search_index = (f"none: pg_trgm is not available here ({first}); LIKE scan. A superuser or the "
                                     "database owner can run CREATE EXTENSION pg_trgm; then reopen it writable")
                return
        self.trgm = self._has_trgm_index()
        if self.trgm:
            self.search_index = "pg_trgm"
        elif self.read_only:
            self.search_index = "none: no pg_trgm index (opened read-only; a writable open creates it); LIKE scan"

    def _has_trgm_index(self) -> bool:
        return bool(self.query("SELECT 1 AS ok FROM pg_indexes WHERE schemaname = current_schema() AND indexname = ?",
                               (TRGM_INDEX,)))

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    # -- statements ----------------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.backend == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement (inside the current transaction, if any)."""
        self.conn.execute(self._sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for many parameter rows."""
        if self.backend == "sqlite":
            self.conn.executemany(sql, rows)
        else:
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of a query as dicts."""
        cur = self.conn.execute(self._sql(sql), tuple(params))
        return [dict(r) for r in cur.fetchall()]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[FeatureDB]:
        """All statements in the block commit together or not at all (nested blocks join the outer one)."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._depth = 1
        try:
            if self.backend == "sqlite":
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
                self.conn.execute("COMMIT")
            else:
                with self.conn.transaction():
                    yield self
        finally:
            self._depth = 0

    # -- writers -------------------------------------------------------------------------------------
    def put_model(self, name: str, config: dict[str, Any]) -> None:
        """Insert or update a model row."""
        self.execute("INSERT INTO models (name, config) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET "
                     "config = excluded.config", (name, json.dumps(config)))

    def put_dictionary(self, name: str, model: str, hook: str, kind: str, n_features: int,
                       config: dict[str, Any], stats: dict[str, Any] | None = None) -> None:
        """Insert or update a dictionary (feature set) row."""
        self.execute("INSERT INTO dictionaries (name, model, hook, kind, n_features, config, stats) VALUES "
                     "(?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET model = excluded.model, hook = "
                     "excluded.hook, kind = excluded.kind, n_features = excluded.n_features, config = "
                     "excluded.config, stats = excluded.stats",
                     (name, model, hook, kind, n_features, json.dumps(config), json.dumps(stats)))

    def put_run(self, run_id: str, dictionary: str, kind: str, status: str, config: dict[str, Any],
                tokens_done: int, tokens_total: int) -> None:
        """Insert or update a run's progress."""
        t = now()
        self.execute("INSERT INTO runs (id, dictionary, kind, status, config, tokens_done, tokens_total, started_at,"
                     " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = "
                     "excluded.status, tokens_done = excluded.tokens_done, updated_at = excluded.updated_at",
                     (run_id, dictionary, kind, status, json.dumps(config), tokens_done, tokens_total, t, t))

    def put_explanation(self, dictionary: str, feature: int, explainer: str, text: str) -> None:
        """Insert or replace the explanation of a feature by an explainer."""
        self.execute("INSERT INTO explanations (dictionary, feature, explainer, text, created_at) VALUES "
                     "(?, ?, ?, ?, ?) ON CONFLICT (dictionary, feature, explainer) DO UPDATE SET text = "
                     "excluded.text, created_at = excluded.created_at", (dictionary, feature, explainer, text, now()))

    def put_score(self, dictionary: str, feature: int, explainer: str, method: str, value: float, n: int,
                  details: dict[str, Any]) -> None:
        """Insert or replace a score of an explanation."""
        self.execute("INSERT INTO scores (dictionary, feature, explainer, method, value, n, details, created_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dictionary, feature, explainer, method) DO "
                     "UPDATE SET value = excluded.value, n = excluded.n, details = excluded.details, created_at = "
                     "excluded.created_at",
                     (dictionary, feature, explainer, method, float(value), n, json.dumps(details), now()))

    # -- readers -------------------------------------------------------------------------------------
    def dictionaries(self) -> list[dict[str, Any]]:
        """Every dictionary (feature set) row."""
        return [_decode(r) for r in self.query("SELECT * FROM dictionaries ORDER BY name")]

    def runs(self) -> list[dict[str, Any]]:
        """Every run row, newest first."""
        return [_decode(r) for r in self.query("SELECT * FROM runs ORDER BY started_at DESC, id")]

    def feature(self, dictionary: str, feature: int) -> dict[str, Any] | None:
        """One feature with its examples (``top`` and ``quantile`` lists), explanations and scores."""
        rows = self.query("SELECT * FROM features WHERE dictionary = ? AND feature = ?", (dictionary, feature))
        if not rows:
            return None
        out = _decode(rows[0])
        ex = [_decode(r) for r in self.query("SELECT * FROM examples WHERE dictionary = ? AND feature = ? "
                                             "ORDER BY kind, ordinal", (dictionary, feature))]
        out["top"] = [e for e in ex if e["kind"] == "top"]
        out["quantiles"] = sorted((e for e in ex if e["kind"] == "quantile"),
                                  key=lambda e: (-e["quantile"], -e["activation"]))
        out["explanations"] = self.query("SELECT explainer, text, created_at FROM explanations WHERE dictionary = ? "
                                         "AND feature = ? ORDER BY created_at DESC, explainer", (dictionary, feature))
        out["scores"] = [_decode(r) for r in self.query(
            "SELECT explainer, method, value, n, details FROM scores WHERE dictionary = ? AND feature = ? "
            "ORDER BY explainer, method", (dictionary, feature))]
        return out

    def search(self, q: str = "", *, dictionary: str = "", sort: str = "density", limit: int = 50,
               offset: int = 0, use_index: bool = True) -> list[dict[str, Any]]:
        """Features whose explanation contains ``q`` (case-insensitive; all when empty), sorted by ``sort``.

        ``sort``: ``density`` (highest first), ``score`` (best explanation score first, unscored last),
        ``feature`` (id). One statement: the page of keys is chosen from indexes, and the feature rows, best
        scores and newest explanations are read for the returned rows only. On SQLite with the FTS5 trigram index
        (``use_index`` and ``q`` of >= 3 characters) the index picks the candidate explanations and the same
        ``LIKE`` test confirms them, so the result equals the plain ``LIKE`` scan's. On PostgreSQL with the
        pg_trgm GIN index on ``LOWER(text)`` the same ``LIKE`` predicate is answered from the index by the planner
        (``use_index=False`` hides the expression from it, for comparison).
        """
        inner = {"density": "f.density DESC, f.dictionary, f.feature", "feature": "f.dictionary, f.feature",
                 "score": "COALESCE({score}, -1.0) DESC, f.dictionary, f.feature"}
        if sort not in inner:
            raise FeatureDBError(f"sort must be one of {', '.join(inner)}, got {sort!r}")
        indexed = bool(q) and use_index and self.fts and len(q) >= 3
        candidates = "rowid IN (SELECT rowid FROM explanations_fts WHERE explanations_fts MATCH ?) AND " if indexed else ""
        lowered = "LOWER(text)" if use_index or self.backend != "postgresql" else "LOWER(text || '')"
        hits = (f"JOIN (SELECT DISTINCT dictionary, feature FROM explanations WHERE {candidates}{lowered} LIKE ? "
                "ESCAPE '!') h ON h.dictionary = f.dictionary AND h.feature = f.feature " if q else "")
        best = "(SELECT MAX(value) FROM scores s WHERE s.dictionary = {t}.dictionary AND s.feature = {t}.feature)"
        # The page of (dictionary, feature) keys is chosen from indexes only (features_by_density_all covers the
        # density order, the primary key the id order); the wide feature rows, the best score and the newest
        # explanation are then read for the returned rows alone. Sorting by score over everything aggregates the
        # scores once; over a search's hits it looks each one up.
        score, join = "", ""
        if sort == "score" and q:
            score = best.format(t="f")
        elif sort == "score":
            score, join = "s.score", ("LEFT JOIN (SELECT dictionary, feature, MAX(value) AS score FROM scores GROUP BY "
                                      "dictionary, feature) s ON s.dictionary = f.dictionary AND s.feature = f.feature ")
        keys = (f"SELECT f.dictionary, f.feature{f', {score} AS score' if score else ''} FROM features f {hits}{join}"
                f"WHERE (? = '' OR f.dictionary = ?) ORDER BY {inner[sort].format(score=score)} LIMIT ? OFFSET ?")
        outer = {"density": "x.density DESC, p.dictionary, p.feature", "feature": "p.dictionary, p.feature",
                 "score": "COALESCE(p.score, -1.0) DESC, p.dictionary, p.feature"}
        sql = (f"SELECT p.dictionary, p.feature, x.density, x.mean_act, x.max_act, "
               f"{'p.score' if score else best.format(t='p')} AS score, (SELECT text FROM explanations e WHERE "
               "e.dictionary = p.dictionary AND e.feature = p.feature ORDER BY e.created_at DESC, e.explainer LIMIT 1) "
               f"AS explanation FROM ({keys}) p JOIN features x ON x.dictionary = p.dictionary AND x.feature = "
               f"p.feature ORDER BY {outer[sort]}")
        pattern = q.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_")  # match q literally
        phrase = '"' + q.replace('"', '""') + '"'  # an FTS5 string: matched as a substring by the trigram index
        params: tuple[Any, ...] = (((phrase,) if indexed else ()) + ((f"%{pattern}%",) if q else ())
                                   + (dictionary, dictionary, int(limit), int(offset)))
        return self.query(sql, params)

    def geometry(self, dictionary: str) -> list[dict[str, Any]]:
        """The stored 2-D map of a feature set (``feature, x, y, cluster, method`` rows by id; [] if none)."""
        if not self.has_geometry:
            return []
        return self.query("SELECT feature, x, y, cluster, method FROM geometry WHERE dictionary = ? ORDER BY feature",
                          (dictionary,))

    def explanations(self, dictionary: str) -> dict[int, str]:
        """The newest explanation text of every explained feature of a feature set."""
        rows = self.query("SELECT feature, text FROM explanations WHERE dictionary = ? ORDER BY created_at, explainer "
                          "DESC", (dictionary,))
        return {int(r["feature"]): r["text"] for r in rows}  # later rows (newer) win

    def count(self, table: str) -> int:
        """Number of rows of a schema table."""
        if table not in TABLES:
            raise FeatureDBError(f"unknown table {table!r}; tables are {', '.join(TABLES)}")
        return int(self.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"])

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of the content tables in a canonical order (what tests compare across runs)."""
        keys = {"models": "name", "dictionaries": "name", "features": "dictionary, feature",
                "examples": "dictionary, feature, kind, ordinal", "explanations": "dictionary, feature, explainer",
                "scores": "dictionary, feature, explainer, method"}
        return {t: self.query(f"SELECT * FROM {t} ORDER BY {k}") for t, k in keys.items()}


__all__ = ["FeatureDB", "now"]
