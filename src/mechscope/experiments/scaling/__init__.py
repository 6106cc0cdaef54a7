"""The width x tokens sweep behind ``mechscope dict scaling``, and feature splitting across its widths.

A case study package (``docs/design.md``, "One shape per case study"): ``run`` (sweep, splits) and
``contexts`` (a split family's max-activating contexts). The package re-exports the modules' names, so
``from mechscope.experiments.scaling import ...`` keeps working; the canonical homes are the modules.
"""

import typing as _typing

from mechscope.experiments._aliases import find as _find
from mechscope.experiments.scaling.contexts import *  # noqa: F403
from mechscope.experiments.scaling.run import *  # noqa: F403


def __getattr__(name: str) -> _typing.Any:
    """Any other name of the study's modules (older code imported some private helpers from here)."""
    return _find(__name__, name, ("run", "contexts"))
