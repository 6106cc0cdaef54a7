"""Moved to ``mechscope.experiments.induction.analysis`` (``load_config`` to ``.config``, ``tour_section`` and
``find_run`` to ``.report``); this name stays importable for older code."""

from mechscope.experiments.induction.analysis import *  # noqa: F403
from mechscope.experiments.induction.config import load_config  # noqa: F401
from mechscope.experiments.induction.report import find_run, tour_section  # noqa: F401
