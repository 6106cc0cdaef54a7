"""The recorded feature study of ``docs/features.md``: explain and score a random sample of SAE latents and of.

A case study package (``docs/design.md``, "One shape per case study"): ``run``. The package re-exports the
modules' names, so ``from mechscope.experiments.features import ...`` keeps working; the canonical homes are
the modules.
"""

import typing as _typing

from mechscope.experiments._aliases import find as _find
from mechscope.experiments.features.run import *  # noqa: F403


def __getattr__(name: str) -> _typing.Any:
    """Any other name of the study's modules (older code imported some private helpers from here)."""
    return _find(__name__, name, ("run",))
