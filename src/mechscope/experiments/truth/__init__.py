"""CCS on a language model, per layer, next to its baselines: supervised logistic regression, zero-shot, random.

A case study package (``docs/design.md``, "One shape per case study"): ``run``. The package re-exports the
modules' names, so ``from mechscope.experiments.truth import ...`` keeps working; the canonical homes are the
modules.
"""

import typing as _typing

from mechscope.experiments._aliases import find as _find
from mechscope.experiments.truth.run import *  # noqa: F403


def __getattr__(name: str) -> _typing.Any:
    """Any other name of the study's modules (older code imported some private helpers from here)."""
    return _find(__name__, name, ("run",))
