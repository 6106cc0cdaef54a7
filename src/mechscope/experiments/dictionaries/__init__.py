"""Sparse dictionaries on a real model, end to end: harvest -> train -> evaluate -> Pareto picture.

A case study package (``docs/design.md``, "One shape per case study"): ``run`` and ``report`` (pictures, the
tour section). The package re-exports the modules' names, so ``from mechscope.experiments.dictionaries import
...`` keeps working; the canonical homes are the modules.
"""

import typing as _typing

from mechscope.experiments._aliases import find as _find
from mechscope.experiments.dictionaries.report import *  # noqa: F403
from mechscope.experiments.dictionaries.run import *  # noqa: F403


def __getattr__(name: str) -> _typing.Any:
    """Any other name of the study's modules (older code imported some private helpers from here)."""
    return _find(__name__, name, ("run", "report"))
