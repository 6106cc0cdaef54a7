"""Moved to ``mechscope.experiments.grokking.report``; this name stays importable for older code."""

from mechscope.experiments.grokking.report import *  # noqa: F403
