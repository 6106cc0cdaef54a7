"""Moved to ``mechscope.experiments.superposition.report`` (a case study's report lives with the case study).

This name stays importable for older code; it loads the new module on first use rather than at import, so
``mechscope.toy`` (a lower layer) never imports a case study while being imported.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """``mechscope.toy.report.X`` is ``mechscope.experiments.superposition.report.X``."""
    from mechscope.experiments.superposition import report

    return getattr(report, name)
