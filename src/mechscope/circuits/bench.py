"""Score every discovery method on every ground truth: ROC AUC, faithfulness at the circuit's size, wall time.

For each ground truth (``circuits/truth``) and method (``circuits/discover.METHODS``):

* ``roc_auc``: how well ``|score|`` separates the truth's edges from every other edge of the model's graph
  (Mann-Whitney with ties counted half; 1 = every true edge above every other edge, 0.5 = chance);
* ``faithfulness``: ``evaluate`` (normalised recovery, 1 = clean behaviour, 0 = corrupted) of the method's
  top ``|truth|`` edges, next to ``truth_faithfulness``, the same for the truth's own edges;
* ``wall_seconds``: the ``discover`` call.

``COSTLY`` lists the (truth, method) pairs skipped by default because they do not fit a CPU run (exact edge
patching and ACDC on SmolLM2's ~10^5 edges); ``run_bench(..., skip_costly=False)`` runs them anyway.
``mechscope circuit bench --json`` prints the rows; ``table(rows)`` renders them as Markdown.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from mechscope.circuits.truth.base import GroundTruth
from mechscope.errors import ConfigError, close_matches

METHOD_NAMES = ("exact", "eap", "eap-ig", "acdc")
"""Methods scored by default."""
COSTLY = frozenset({("ioi", "exact"), ("ioi", "acdc")})
"""(truth, method) pairs skipped unless ``skip_costly=False``."""
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {"eap-ig": {"steps": 16}, "acdc": {"threshold": 0.01, "objective": "metric"}}
"""Options passed to ``discover`` per method (overridable with ``run_bench(options=...)``)."""


def roc_auc(scores: Mapping[str, float], positives: Iterable[str]) -> float:
    """ROC AUC of ``|scores|`` for the edges in ``positives`` against all other scored edges (ties count 1/2)."""
    pos = set(positives)
    missing = sorted(pos - set(scores))
    if missing:
        raise ConfigError(f"truth edges {missing[:5]} are not in the scored graph ({len(scores)} edges)")
    names = list(scores)
    y = torch.tensor([n in pos for n in names])
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(f"ROC AUC needs positive and negative edges, got {n_pos} and {n_neg}")
    s = torch.tensor([abs(float(scores[n])) for n in names], dtype=torch.float64)
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks with ties given their average rank."""
    uniq, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    avg = ends - (counts.to(torch.float64) - 1) / 2
    del uniq
    return avg[inverse]


def _top(scores: Mapping[str, float], k: int) -> list[str]:
    return sorted(scores, key=lambda e: -abs(scores[e]))[:k]


def run_bench(methods: Sequence[str] | None = None, truths: Sequence[str | GroundTruth] | None = None, *,
              options: Mapping[str, Mapping[str, Any]] | None = None, skip_costly: bool = True) -> list[dict[str, Any]]:
    """One row per (truth, method); see the module docstring. ``truths``: names (default: every registered
    truth except ``ioi``, which loads SmolLM2; name it to include it) or built ``GroundTruth`` objects (e.g.
    ``ioi_truth(n_prompts=8)``)."""
    from mechscope.circuits.discover import METHODS, discover
    from mechscope.circuits.evaluate import evaluate
    from mechscope.circuits.graph import Graph
    from mechscope.circuits.truth import TRUTHS, load_truth

    methods = list(methods or METHOD_NAMES)
    for m in methods:
        if m not in METHODS:
            near = close_matches(m, METHODS)
            raise ConfigError(f"unknown method {m!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                              + f"; choose from {sorted(METHODS)}")
    truths = list(truths or [t for t in TRUTHS if t != "ioi"])
    opts = {**DEFAULT_OPTIONS, **(options or {})}
    rows: list[dict[str, Any]] = []
    for item in truths:
        truth = load_truth(item) if isinstance(item, str) else item
        name = truth.name
        graph = Graph.from_model(truth.model)
        args = (truth.model, truth.clean, truth.corrupted, truth.metric)
        truth_faith = evaluate(*args, edges=sorted(truth.edges), readout=truth.readout, graph=graph)
        for method in methods:
            row: dict[str, Any] = {"truth": name, "method": method, "n_edges_total": len(graph.edge_names),
                                   "n_edges_truth": len(truth.edges), "truth_faithfulness": round(truth_faith, 4)}
            if skip_costly and (name, method) in COSTLY:
                rows.append({**row, "skipped": "too costly on a CPU (see COSTLY)"})
                continue
            t0 = time.perf_counter()
            scores = discover(*args, method=method, graph=graph, readout=truth.readout,
                              **dict(opts.get(method, {}))).to_dict()
            wall = time.perf_counter() - t0
            top = _top(scores, len(truth.edges))
            faith = evaluate(*args, edges=top, readout=truth.readout, graph=graph)
            rows.append({**row, "roc_auc": round(roc_auc(scores, truth.edges), 4), "faithfulness": round(faith, 4),
                         "top_is_truth": round(len(set(top) & truth.edges) / len(truth.edges), 4),
                         "wall_seconds": round(wall, 3)})
    return rows


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of ``run_bench`` rows."""
    head = "| truth | edges (truth / all) | method | ROC AUC | faithfulness at truth size | truth's own | wall s |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        size = f"{r['n_edges_truth']} / {r['n_edges_total']}"
        if "skipped" in r:
            lines.append(f"| {r['truth']} | {size} | {r['method']} | skipped | | {r['truth_faithfulness']:.3f} | |")
            continue
        lines.append(f"| {r['truth']} | {size} | {r['method']} | {r['roc_auc']:.4f} | {r['faithfulness']:.3f} | "
                     f"{r['truth_faithfulness']:.3f} | {r['wall_seconds']:.2f} |")
    return "\n".join(lines)


__all__ = ["COSTLY", "DEFAULT_OPTIONS", "METHOD_NAMES", "roc_auc", "run_bench", "table"]
