"""Exact edge patching, the oracle: for every edge, the metric with that edge alone patched.

One row block per edge: ``chunk`` one-hot masks run as variants of one forward (the batch repeated per
variant), so ``n_edges / chunk`` forwards score the whole graph. Blocks of a variant whose masks are all
zero are skipped, so a one-edge variant costs little more than a plain forward.
"""

from __future__ import annotations

import torch

from mechscope.circuits.problem import Problem
from mechscope.circuits.scores import EdgeScores
from mechscope.errors import ConfigError


def exact(problem: Problem, chunk: int = 32) -> EdgeScores:
    """Score every edge by patching it alone: ``mean metric(patched) - mean metric(clean)``."""
    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1, got {chunk}")
    g = problem.graph
    n = len(g.edges)
    out = torch.empty(n)
    with torch.no_grad():
        base = float(problem.run(torch.zeros(len(g.senders), len(g.receivers))).mean())
        for i in range(0, n, chunk):
            idx = torch.arange(i, min(i + chunk, n))
            onehot = torch.zeros(len(idx), n)
            onehot[torch.arange(len(idx)), idx] = 1.0
            out[idx] = problem.run(g.scatter(onehot)).mean(dim=1) - base
    return EdgeScores(g, out, "exact", info={"clean": problem.clean_value, "corrupted": problem.corrupted_value,
                                              "clean_patched_forward": base, "forwards": problem.forwards,
                                              "ablation": problem.ablation})


__all__ = ["exact"]
