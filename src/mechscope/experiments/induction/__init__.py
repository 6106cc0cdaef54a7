"""Induction heads on real text (Elhage et al. 2021; Olsson et al. 2022), end to end on a CPU.

One case study, four modules, each importing only those before it: ``config`` (``InductionConfig``,
``model_config``, ``load_config``), ``run`` (``train``, ``RepeatedBatches``), ``analysis`` (``analyze``,
``public``), ``report`` (``figures``, ``smollm2_heads``, ``tour_section``). This package re-exports their
public names (and the few private helpers older code imported), so
``from mechscope.experiments.induction import InductionConfig, train, analyze`` works; the canonical homes
are the modules.
"""

import typing as _typing

from mechscope.experiments._aliases import find as _find
from mechscope.experiments.induction.analysis import *  # noqa: F403
from mechscope.experiments.induction.config import *  # noqa: F403
from mechscope.experiments.induction.config import _identity, _plateau_stop  # noqa: F401
from mechscope.experiments.induction.report import *  # noqa: F403
from mechscope.experiments.induction.run import *  # noqa: F403
from mechscope.experiments.induction.run import _corpus, _lm_loss, _sinusoidal_positions  # noqa: F401


def __getattr__(name: str) -> _typing.Any:
    """Any other name of the study's modules (older code imported some private helpers from here)."""
    return _find(__name__, name, ("config", "run", "analysis", "report"))
