"""How much of the behaviour a circuit keeps: ``evaluate``, faithfulness curves and MIB-style areas.

``evaluate`` patches every edge *outside* the circuit and reports normalised recovery
``(metric(circuit) - corrupted) / (clean - corrupted)`` (1 = clean behaviour, 0 = corrupted). A
faithfulness curve evaluates the top-k circuits of an ``EdgeScores`` for several k in one batched forward
(each k is a variant). Its areas follow MIB (Mueller et al. 2025): CPR, the area under recovery over the
fraction of edges kept (higher is better), and CMD, the area under ``|1 - recovery|`` (lower is better),
by the trapezoidal rule over the fractions evaluated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from mechscope.circuits.graph import Graph
from mechscope.circuits.patchable import Ablation, MetricFn
from mechscope.circuits.problem import Problem
from mechscope.circuits.scores import EdgeScores
from mechscope.errors import ConfigError

MIB_FRACTIONS: tuple[float, ...] = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Circuit sizes (fractions of all edges) of MIB's faithfulness curves."""


def evaluate(model: Any, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"], metric: MetricFn,
             edges: Iterable[str], readout: int | None = -1, *, graph: Graph | None = None,
             ablation: Ablation = "corrupted", seed: int = 0) -> float:
    """Normalised recovery of the circuit ``edges`` with every other edge patched (module docstring)."""
    problem = Problem(model, graph if graph is not None else Graph.from_model(model), clean, corrupted, metric,
                      readout, ablation, seed)
    g = problem.graph
    keep = g.mask(sorted(set(edges)))
    with torch.no_grad():
        value = float(problem.run(g.valid.float() - keep).mean())
    return problem.normalised(value)


@dataclass(frozen=True)
class FaithfulnessCurve:
    """Recovery of the top-k circuits; ``cpr`` / ``cmd`` are MIB's areas over ``fractions``."""

    n_edges: list[int]
    """Circuit sizes evaluated."""
    fractions: list[float]
    """Sizes as fractions of all edges."""
    recovery: list[float]
    """Normalised recovery at each size."""
    cpr: float
    """Area under recovery (trapezoid over fractions)."""
    cmd: float
    """Area under |1 - recovery|."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"n_edges": self.n_edges, "fractions": self.fractions, "recovery": self.recovery,
                "cpr": self.cpr, "cmd": self.cmd}


def faithfulness_curve(model: Any, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                       metric: MetricFn, scores: EdgeScores, fractions: Sequence[float] = MIB_FRACTIONS,
                       readout: int | None = -1, *, ablation: Ablation = "corrupted", seed: int = 0,
                       chunk: int = 8) -> FaithfulnessCurve:
    """Recovery of ``scores.top(k)`` for k = round(fraction · n_edges), batched ``chunk`` sizes per forward."""
    if not fractions or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ConfigError(f"fractions must be a non-empty list of numbers in [0, 1], got {list(fractions)}")
    problem = Problem(model, scores.graph, clean, corrupted, metric, readout, ablation, seed)
    g = scores.graph
    n = len(g.edges)
    sizes = [int(round(f * n)) for f in fractions]
    order = torch.sort(scores.scores.abs(), descending=True, stable=True).indices
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    values: list[float] = []
    with torch.no_grad():
        for i in range(0, len(sizes), chunk):
            keep = torch.stack([(rank < k).float() for k in sizes[i:i + chunk]])
            values += problem.run(g.scatter(1.0 - keep)).mean(dim=1).tolist()
    rec = [problem.normalised(v) for v in values]
    fr = [k / n for k in sizes]
    return FaithfulnessCurve(n_edges=sizes, fractions=fr, recovery=rec, cpr=_trapezoid(fr, rec),
                             cmd=_trapezoid(fr, [abs(1.0 - r) for r in rec]))


def _trapezoid(x: list[float], y: list[float]) -> float:
    return float(sum((x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2 for i in range(len(x) - 1)))


__all__ = ["MIB_FRACTIONS", "FaithfulnessCurve", "evaluate", "faithfulness_curve"]
