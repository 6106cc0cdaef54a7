"""Static export: feature pages as self-contained HTML files (``mechscope features export``)."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mechscope.errors import ConfigError
from mechscope.features.db import FeatureDB
from mechscope.features.render import feature_list, feature_page, page


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def slug(name: str) -> str:
    """A file-name-safe form of a dictionary name (``neurons:blocks.6.mlp.hook_post`` -> ``neurons_blocks.6...``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "dictionary"


def export(db: FeatureDB, dictionary: str, features: Sequence[int], out: str | os.PathLike[str]) -> list[Path]:
    """Write ``<out>/<feature>.html`` for each feature and an ``index.html`` linking them; returns the paths."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    written, rows = [], []
    for i in features:
        feat = db.feature(dictionary, int(i))
        if feat is None:
            raise ConfigError(f"no feature {i} of dictionary {dictionary!r} in {db.where}")
        path = root / f"{int(i)}.html"
        _write(path, feature_page(feat, lambda d, j: f"{j}.html" if j in features else "#"))
        written.append(path)
        rows.append({**feat, "explanation": feat["explanations"][0]["text"] if feat["explanations"] else None,
                     "score": max((s["value"] for s in feat["scores"]), default=None)})
    index = root / "index.html"
    _write(index, page(f"{dictionary} features", feature_list(rows, lambda d, j: f"{j}.html")))
    return [index, *written]


__all__ = ["export", "slug"]
