"""Run-time reporting: ``metrics.jsonl`` (one JSON object per logged step) and the live progress bar.

``metrics.jsonl`` is appended and flushed line by line, so a killed run keeps what it measured. On
resume from a checkpoint at step s, lines for steps >= s (measured after that checkpoint, and about to
be measured again) and any torn last line are dropped, so the file of a resumed run equals that of an
uninterrupted one (apart from the ``wall`` field).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mechscope.train.checkpoint import atomic_write

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete record of ``<run>/metrics.jsonl`` (a torn last line is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            out.append(rec)
    return out


class MetricsLog:
    """Appends records to ``<run>/metrics.jsonl``; ``truncate_from(step)`` prepares a resume."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self._f: Any = None

    def truncate_from(self, step: int) -> None:
        """Keep only records with ``step < step`` (rewritten atomically)."""
        kept = [r for r in read_metrics(self.path.parent) if int(r["step"]) < step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write(self.path, lambda p: p.write_text(text, encoding="utf-8"))

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record and flush it (non-finite floats become null, keeping the file valid JSON)."""
        if self._f is None:
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._f.write(json.dumps(clean) + "\n")
        self._f.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._f is not None:
            self._f.close()
            self._f = None


class Progress:
    """A tqdm bar over updates showing the latest loss and accuracy-like metrics (or nothing if disabled)."""

    SHOWN = ("loss", "acc", "train_acc", "test_loss", "test_acc", "eval_loss")

    def __init__(self, total: int, initial: int, enabled: bool, desc: str = "train") -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, mininterval=0.5)
        self.shown: dict[str, str] = {}

    def update(self, record: Mapping[str, Any]) -> None:
        """Advance one update; refresh the displayed values from ``record``."""
        if self.bar is None:
            return
        for k in self.SHOWN:
            v = record.get(k)
            if isinstance(v, float):
                self.shown[k] = f"{v:.3g}"
        self.bar.set_postfix(self.shown, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()
