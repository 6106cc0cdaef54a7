"""DAS on SmolLM2's indirect-object identification: where is "which name is the subject"?

A case study package (``docs/design.md``, "One shape per case study"): ``run``. The package re-exports the
module's names, so ``from mechscope.experiments.ioi_das import ...`` keeps working; the canonical home is the module.
"""

import typing as _typing

from mechscope.experiments._aliases import find as _find
from mechscope.experiments.ioi_das.run import *  # noqa: F403


def __getattr__(name: str) -> _typing.Any:
    """Any other name of the study's module."""
    return _find(__name__, name, ("run",))
