"""Grokking of modular addition (Nanda et al. 2023): train a 1-layer transformer, then reverse-engineer it.

One case study, four modules, each importing only those before it: ``config`` (``GrokkingConfig``, the
presets), ``run`` (``run``, ``load_run``), ``analysis`` (``analyze``, ``cached_analysis``), ``report``
(figures, ``report_section``, ``tour_section``). This package re-exports their public names, so
``from mechscope.experiments.grokking import run, analyze, QUICK`` works; the canonical homes are the
modules (note ``grokking.run`` is the function; the module is ``mechscope.experiments.grokking.run``).
"""

import typing as _typing

from mechscope.experiments._aliases import find as _find
from mechscope.experiments.grokking.analysis import *  # noqa: F403
from mechscope.experiments.grokking.config import *  # noqa: F403
from mechscope.experiments.grokking.report import *  # noqa: F403
from mechscope.experiments.grokking.run import *  # noqa: F403


def __getattr__(name: str) -> _typing.Any:
    """Any other name of the study's modules (older code imported some private helpers from here)."""
    return _find(__name__, name, ("config", "run", "analysis", "report"))
