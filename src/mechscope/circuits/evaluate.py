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
from jaxtyping import Bool, Int
from torch import Tensor

from mechscope.circuits.graph import Graph
from mechscope.circuits.patchable import Ablation, MetricFn
from mechscope.circuits.problem import Problem
from mechscope.circuits.scores import EdgeScores
from mechscope.circuits.select import Selection, select_mask
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


def evaluate_many(model: Any, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"], metric: MetricFn,
                  keep: Bool[Tensor, "circuits n_edges"], readout: int | None = -1, *, graph: Graph | None = None,
                  ablation: Ablation = "corrupted", seed: int = 0, chunk: int = 4) -> list[float]:
    """``evaluate`` of several circuits given as per-edge keep masks, ``chunk`` circuits per batched forward
    (each circuit is a variant), e.g. the selections of ``circuits.select`` at several sizes."""
    g = graph if graph is not None else Graph.from_model(model)
    if keep.dim() != 2 or keep.shape[1] != g.n_edges:
        raise ConfigError(f"keep must be bool [circuits {g.n_edges}], got shape {tuple(keep.shape)}")
    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1, got {chunk}")
    problem = Problem(model, g, clean, corrupted, metric, readout, ablation, seed)
    values: list[float] = []
    with torch.no_grad():
        for i in range(0, keep.shape[0], chunk):
            values += problem.run(g.scatter(1.0 - keep[i:i + chunk].float())).mean(dim=1).tolist()
    return [problem.normalised(v) for v in values]


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
                       chunk: int = 8, selection: Selection = "abs") -> FaithfulnessCurve:
    """Recovery of the circuits ``circuits.select`` picks (``selection``; ``abs`` = ``scores.top(k)``) for
    k = round(fraction · n_edges), batched ``chunk`` sizes per forward. ``n_edges`` / ``fractions`` report
    the sizes actually kept (a pruned selection keeps at most k)."""
    if not fractions or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ConfigError(f"fractions must be a non-empty list of numbers in [0, 1], got {list(fractions)}")
    g = scores.graph
    n = g.n_edges
    keep = torch.stack([select_mask(scores, int(round(f * n)), selection) for f in fractions])
    rec = evaluate_many(model, clean, corrupted, metric, keep, readout, graph=g, ablation=ablation, seed=seed,
                        chunk=chunk)
    sizes = keep.sum(1).tolist()
    fr = [k / n for k in sizes]
    return FaithfulnessCurve(n_edges=sizes, fractions=fr, recovery=rec, cpr=_trapezoid(fr, rec),
                             cmd=_trapezoid(fr, [abs(1.0 - r) for r in rec]))


def _trapezoid(x: list[float], y: list[float]) -> float:
    return float(sum((x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2 for i in range(len(x) - 1)))


__all__ = ["MIB_FRACTIONS", "FaithfulnessCurve", "evaluate", "evaluate_many", "faithfulness_curve"]
