"""k-sparse probing on dictionary latents vs neurons vs PCA components at equal k (SAEBench's sparse probing).

A case study package (``docs/design.md``, "One shape per case study"): ``run``. The package re-exports the
module's names, so ``from mechscope.experiments.sparse_dictionary import ...`` keeps working; the canonical home is the module.
"""

import typing as _typing

from mechscope.experiments._aliases import find as _find
from mechscope.experiments.sparse_dictionary.run import *  # noqa: F403


def __getattr__(name: str) -> _typing.Any:
    """Any other name of the study's module."""
    return _find(__name__, name, ("run",))
