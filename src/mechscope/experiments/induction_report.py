"""Moved to ``mechscope.experiments.induction.report``; this name stays importable for older code."""

from mechscope.experiments.induction.report import *  # noqa: F403
