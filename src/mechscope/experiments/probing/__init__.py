"""Linear probing sweep on a language model: is a statement true, read at its last token, layer by layer?.

A case study package (``docs/design.md``, "One shape per case study"): ``run``. The package re-exports the
modules' names, so ``from mechscope.experiments.probing import ...`` keeps working; the canonical homes are
the modules.
"""

import typing as _typing

from mechscope.experiments._aliases import find as _find
from mechscope.experiments.probing.run import *  # noqa: F403


def __getattr__(name: str) -> _typing.Any:
    """Any other name of the study's modules (older code imported some private helpers from here)."""
    return _find(__name__, name, ("run",))
