"""``discover``: one entry point for every circuit-discovery method, one contract.

``discover(model, clean, corrupted, metric, method=..., graph=None, readout=-1, **options) -> EdgeScores``.
``metric(logits [batch pos vocab]) -> [batch]`` gives one value per example (methods average over the
batch); with ``readout=r`` it sees only position ``r`` (pos of length 1), with ``readout=None`` every
position. Methods (registered in ``METHODS``; options are the method function's keyword arguments):

* ``exact``: patch each edge alone (the oracle); option ``chunk`` (edges per forward).
* ``eap``: edge attribution patching, one backward for every edge; ``precision`` (``auto`` | ``full`` |
  ``bf16``: the dtype of the sender x receiver contraction, ``gradient.contraction_dtype``).
* ``eap-ig``: EAP with integrated gradients; ``steps``, ``variant`` (``inputs`` | ``activations``), ``chunk``,
  ``precision``.
* ``acdc``: Conmy et al.'s greedy pruning; ``threshold``, ``objective`` (``kl`` | ``metric``), ``batched``,
  ``chunk``, ``receivers``.

Every method also takes ``ablation`` (``corrupted`` | ``mean`` | ``zero`` | ``resample``) and ``seed``.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

from jaxtyping import Int
from torch import Tensor

from mechscope.circuits.acdc import acdc
from mechscope.circuits.exact import exact
from mechscope.circuits.gradient import eap, eap_ig
from mechscope.circuits.graph import Graph
from mechscope.circuits.patchable import Ablation, MetricFn
from mechscope.circuits.problem import Problem
from mechscope.circuits.scores import Circuit, EdgeScores
from mechscope.errors import ConfigError, close_matches

METHODS: dict[str, Callable[..., EdgeScores]] = {"exact": exact, "eap": eap, "eap-ig": eap_ig, "acdc": acdc}
"""Method name -> function(problem, **options)."""


def discover(model: Any, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"], metric: MetricFn,
             method: str = "eap-ig", graph: Graph | None = None, readout: int | None = -1,
             ablation: Ablation = "corrupted", seed: int = 0, **options: Any) -> EdgeScores:
    """Score every edge of ``graph`` (default ``Graph.from_model(model)``) with ``method``."""
    fn = METHODS.get(method)
    if fn is None:
        near = close_matches(method, METHODS)
        raise ConfigError(f"unknown circuit method {method!r}; choose one of {sorted(METHODS)}"
                          + (f" (did you mean {near[0]!r}?)" if near else ""))
    allowed = [p for p in inspect.signature(fn).parameters if p != "problem"]
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ConfigError(f"method {method!r} has no option(s) {bad}; its options are {allowed}")
    t0 = time.perf_counter()
    problem = Problem(model, graph if graph is not None else Graph.from_model(model), clean, corrupted, metric,
                      readout, ablation, seed)
    scores = fn(problem, **options)
    scores.info.update(wall_seconds=time.perf_counter() - t0, forwards=problem.forwards, options=dict(options))
    return scores


__all__ = ["METHODS", "Circuit", "EdgeScores", "discover"]
