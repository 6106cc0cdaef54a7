"""The feature database schema, version 1: plain SQL that SQLite (>= 3.24) and PostgreSQL both run.

Tables (keys in brackets; JSON columns are TEXT):

* ``meta [key]``: ``schema_version`` and ``created_by``;
* ``models [name]``: a model and its config (JSON);
* ``dictionaries [name]``: a feature set (a dictionary's latents, or ``neurons:<hook>``), its model, hook, kind
  (``sae`` | ``neurons``), ``n_features``, config JSON, and ``stats`` JSON (tokens harvested, window, bins);
* ``runs [id]``: one harvest / explain / score run: status (``running`` | ``done``), config JSON, progress;
* ``features [dictionary, feature]``: density, mean / max activation, fired count, ``histogram`` JSON
  (``{"edges": [...], "counts": [...]}``), ``top_logits`` / ``bottom_logits`` JSON (``[[token, value], ...]``),
  ``neighbours_cosine`` / ``neighbours_coact`` JSON (``[[feature, similarity], ...]``);
* ``examples [dictionary, feature, kind, ordinal]``: kind ``top`` (ordinal = rank) or ``quantile`` (with
  ``quantile`` 0..9, 0 lowest), the example's activation, global ``token_index``, ``focus`` (its index in
  the window), ``tokens`` JSON (strings) and ``acts`` JSON (this feature's activation on every window token);
* ``explanations [dictionary, feature, explainer]``: the text and when it was made;
* ``scores [dictionary, feature, explainer, method]``: ``detection`` / ``fuzzing`` value in [0, 1], number of
  trials and details JSON;
* ``geometry [dictionary, feature]``: the feature's point ``x, y`` on a 2-D map of the write directions, its
  ``cluster`` and the map's ``method`` (``features/geometry.py``). Added after the first release of version 1
  without a version bump: it is created on opening a writable database, and readers treat it as optional.

Index ``features_by_density_all (density DESC, dictionary, feature)`` (added later, also without a bump, created on a
writable open) lets the browser's density order read a page of keys from the index instead of every wide feature row.

Identifiers are natural keys (no auto-increment, whose syntax differs between the two databases); upserts use
``INSERT ... ON CONFLICT ... DO UPDATE``, also common to both. A database whose ``schema_version`` differs
from :data:`SCHEMA_VERSION` is refused with ``FeatureDBError``.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

DDL = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, config TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS dictionaries (
        name TEXT PRIMARY KEY, model TEXT NOT NULL REFERENCES models(name), hook TEXT NOT NULL,
        kind TEXT NOT NULL, n_features INTEGER NOT NULL, config TEXT NOT NULL, stats TEXT)""",
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY, dictionary TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
        config TEXT NOT NULL, tokens_done BIGINT NOT NULL, tokens_total BIGINT NOT NULL,
        started_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS features (
        dictionary TEXT NOT NULL REFERENCES dictionaries(name), feature INTEGER NOT NULL,
        density DOUBLE PRECISION NOT NULL, mean_act DOUBLE PRECISION NOT NULL, max_act DOUBLE PRECISION NOT NULL,
        n_fired BIGINT NOT NULL, histogram TEXT NOT NULL, top_logits TEXT, bottom_logits TEXT,
        neighbours_cosine TEXT, neighbours_coact TEXT, PRIMARY KEY (dictionary, feature))""",
    "CREATE INDEX IF NOT EXISTS features_by_density ON features (dictionary, density)",
    DENSITY_DDL := "CREATE INDEX IF NOT EXISTS features_by_density_all ON features (density DESC, dictionary, feature)",
    """CREATE TABLE IF NOT EXISTS examples (
        dictionary TEXT NOT NULL, feature INTEGER NOT NULL, kind TEXT NOT NULL, ordinal INTEGER NOT NULL,
        quantile INTEGER, activation DOUBLE PRECISION NOT NULL, token_index BIGINT NOT NULL,
        focus INTEGER NOT NULL, tokens TEXT NOT NULL, acts TEXT NOT NULL,
        PRIMARY KEY (dictionary, feature, kind, ordinal))""",
    """CREATE TABLE IF NOT EXISTS explanations (
        dictionary TEXT NOT NULL, feature INTEGER NOT NULL, explainer TEXT NOT NULL, text TEXT NOT NULL,
        created_at TEXT NOT NULL, PRIMARY KEY (dictionary, feature, explainer))""",
    """CREATE TABLE IF NOT EXISTS scores (
        dictionary TEXT NOT NULL, feature INTEGER NOT NULL, explainer TEXT NOT NULL, method TEXT NOT NULL,
        value DOUBLE PRECISION NOT NULL, n INTEGER NOT NULL, details TEXT NOT NULL, created_at TEXT NOT NULL,
        PRIMARY KEY (dictionary, feature, explainer, method))""",
    GEOMETRY_DDL := """CREATE TABLE IF NOT EXISTS geometry (
        dictionary TEXT NOT NULL, feature INTEGER NOT NULL, x DOUBLE PRECISION NOT NULL,
        y DOUBLE PRECISION NOT NULL, cluster INTEGER NOT NULL, method TEXT NOT NULL,
        PRIMARY KEY (dictionary, feature))""",
]

# SQLite only, optional (used when the SQLite build has FTS5): a trigram index over the explanation text, kept in
# step with ``explanations`` by triggers, so a substring search reads the index instead of scanning every row.
# A database without it (older files, PostgreSQL, a SQLite without FTS5) is searched with LIKE; same results.
FTS_DDL = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS explanations_fts USING fts5(text, content='explanations', "
    "content_rowid='rowid', tokenize='trigram case_sensitive 0')",
    "CREATE TRIGGER IF NOT EXISTS explanations_fts_ai AFTER INSERT ON explanations BEGIN "
    "INSERT INTO explanations_fts(rowid, text) VALUES (new.rowid, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS explanations_fts_ad AFTER DELETE ON explanations BEGIN "
    "INSERT INTO explanations_fts(explanations_fts, rowid, text) VALUES ('delete', old.rowid, old.text); END",
    "CREATE TRIGGER IF NOT EXISTS explanations_fts_au AFTER UPDATE ON explanations BEGIN "
    "INSERT INTO explanations_fts(explanations_fts, rowid, text) VALUES ('delete', old.rowid, old.text); "
    "INSERT INTO explanations_fts(rowid, text) VALUES (new.rowid, new.text); END",
]

# PostgreSQL only, optional (used when the pg_trgm extension is installed or this role may create it — it is a
# trusted extension since PostgreSQL 13): a trigram GIN index on the lowered explanation text, which the planner
# uses for the search's ``LOWER(text) LIKE '%q%'`` itself. Without it, the same query is a sequential scan.
TRGM_INDEX = "explanations_trgm"
TRGM_DDL = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    f"CREATE INDEX IF NOT EXISTS {TRGM_INDEX} ON explanations USING gin (LOWER(text) gin_trgm_ops)",
]

TABLES = ("meta", "models", "dictionaries", "runs", "features", "examples", "explanations", "scores", "geometry")
