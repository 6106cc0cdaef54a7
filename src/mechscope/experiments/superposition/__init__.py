"""Toy models of superposition (Elhage et al. 2022) and computation in superposition.

One case study, three modules, each importing only those before it: ``config``
(``SuperpositionExperimentConfig``), ``run`` (``run``, the sweeps ``run_intro`` ... ``run_and``,
``SuperpositionResult``), ``report`` (``save_figures``, ``section_html``, ``tour_section``). The toy models
live below, in ``mechscope.toy``. This package re-exports the modules' public names, so
``from mechscope.experiments.superposition import run, SuperpositionExperimentConfig`` works; the canonical
homes are the modules (``superposition.run`` is the function; the module is
``mechscope.experiments.superposition.run``).
"""

import typing as _typing

from mechscope.experiments._aliases import find as _find
from mechscope.experiments.superposition.config import *  # noqa: F403
from mechscope.experiments.superposition.report import *  # noqa: F403
from mechscope.experiments.superposition.run import *  # noqa: F403


def __getattr__(name: str) -> _typing.Any:
    """Any other name of the study's modules (older code imported some private helpers from here)."""
    return _find(__name__, name, ("config", "run", "report"))
