"""Case study: indirect object identification and factual recall in SmolLM2, by causal interventions.

A case study package (``docs/design.md``, "One shape per case study"): ``run`` and ``report`` (pictures, the
tour section). The package re-exports the modules' names, so ``from mechscope.experiments.ioi import ...``
keeps working; the canonical homes are the modules.
"""

import typing as _typing

from mechscope.experiments._aliases import find as _find
from mechscope.experiments.ioi.report import *  # noqa: F403
from mechscope.experiments.ioi.run import *  # noqa: F403


def __getattr__(name: str) -> _typing.Any:
    """Any other name of the study's modules (older code imported some private helpers from here)."""
    return _find(__name__, name, ("run", "report"))
