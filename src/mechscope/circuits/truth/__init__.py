"""Ground-truth circuits for validating discovery methods: compiled RASP programs, a planted circuit, the
induction circuit of a small trained model, and IOI on SmolLM2.

``load_truth(name)`` builds one; ``TRUTHS`` maps every name to its zero-argument builder. Builders import
their heavy parts lazily (``ioi`` loads SmolLM2, ``induction`` trains or reads a cached model).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from mechscope.circuits.truth.base import GroundTruth
from mechscope.circuits.truth.rasp.programs import PROGRAMS
from mechscope.errors import ConfigError, close_matches


def _rasp(name: str) -> GroundTruth:
    from mechscope.circuits.truth.rasp.truth import rasp_truth

    return rasp_truth(name)


def _planted() -> GroundTruth:
    from mechscope.circuits.truth.planted import planted_truth

    return planted_truth()


def _induction() -> GroundTruth:
    from mechscope.circuits.truth.induction import induction_truth

    return induction_truth()


def _ioi() -> GroundTruth:
    from mechscope.circuits.truth.ioi import ioi_truth

    return ioi_truth()


TRUTHS: dict[str, Callable[[], GroundTruth]] = {
    **{f"rasp:{p}": partial(_rasp, p) for p in PROGRAMS},
    "planted": _planted,
    "induction": _induction,
    "ioi": _ioi,
}
"""Ground-truth name -> zero-argument builder."""


def load_truth(name: str) -> GroundTruth:
    """The ground truth called ``name`` (``rasp:<program>``, ``planted``, ``induction``, ``ioi``)."""
    if name not in TRUTHS:
        near = close_matches(name, TRUTHS)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        raise ConfigError(f"unknown ground truth {name!r}.{hint} Known: {', '.join(TRUTHS)}")
    return TRUTHS[name]()


__all__ = ["TRUTHS", "GroundTruth", "load_truth"]
