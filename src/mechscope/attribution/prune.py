"""Influence, pruning and scores of an attribution graph (circuit-tracer's definitions).

Influence of node ``j`` on the logits: ``sum_{k>=1} (w @ Â^k)_j`` with ``Â`` the row-normalised ``|A|`` and ``w`` the
logit probabilities on the logit nodes (the graph is a DAG, so the series ends). ``prune`` keeps the features
carrying ``node_threshold`` of that influence, then the edges carrying ``edge_threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mechscope.errors import ConfigError

if TYPE_CHECKING:
    from mechscope.attribution.graph import AttributionGraph


def normalize_matrix(adjacency: Tensor) -> Tensor:
    """|A| with each row scaled to sum 1 (rows of zeros stay zero)."""
    a = adjacency.abs().float()
    return a / a.sum(1, keepdim=True).clamp_min(1e-10)


def compute_influence(normalized: Tensor, weights: Tensor, max_iter: int = 10_000) -> Tensor:
    """``sum_{k>=1} weights @ Â^k``: the total (indirect) influence of each node on the weighted targets."""
    current = weights @ normalized
    influence = current.clone()
    for _ in range(max_iter):
        if not bool(current.any()):
            return influence
        current = current @ normalized
        influence += current
    raise ConfigError("influence did not converge: the adjacency has a cycle (it must be a DAG)")


def _cumulative_mask(scores: Tensor, threshold: float) -> Tensor:
    """Keep the largest scores until their sum reaches ``threshold`` of the total."""
    total = float(scores.sum())
    if total <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    order = scores.argsort(descending=True)
    cum = scores[order].cumsum(0) / total
    n = int((cum < threshold).sum()) + 1
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep[order[:n]] = True
    return keep & (scores > 0)


def logit_weights(graph: AttributionGraph) -> Tensor:
    """[n_nodes] the logit probabilities on the logit nodes, 0 elsewhere."""
    w = torch.zeros(graph.n_nodes)
    w[graph.logit_slice] = graph.logit_probabilities.float()
    return w


@dataclass(frozen=True)
class PrunedGraph:
    """Which nodes and edges of an ``AttributionGraph`` carry the kept share of the logit influence."""

    node_mask: Tensor
    """[n_nodes] bool."""
    edge_mask: Tensor
    """[n_nodes n_nodes] bool (row target, column source)."""
    node_influence: Tensor
    """[n_nodes] influence on the logits (unpruned graph) plus the logit weights."""


def prune(graph: AttributionGraph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> PrunedGraph:
    """Keep the features carrying ``node_threshold`` of the influence on the logits, then the edges carrying
    ``edge_threshold`` of the influence among them; tokens/errors survive if a kept edge leaves them."""
    for name, v in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0 < v <= 1:
            raise ConfigError(f"{name} must be in (0, 1], got {v}")
    A = graph.adjacency
    w = logit_weights(graph)
    influence = compute_influence(normalize_matrix(A), w)
    nf = graph.n_features
    node_mask = torch.ones(graph.n_nodes, dtype=torch.bool)
    node_mask[:nf] = _cumulative_mask(influence[:nf], node_threshold)
    pruned = A.float() * node_mask[None, :] * node_mask[:, None]
    norm = normalize_matrix(pruned)
    inf2 = compute_influence(norm, w) + w
    scores = norm * inf2[:, None]
    edge_mask = _cumulative_mask(scores.flatten(), edge_threshold).view_as(scores)
    # drop nodes left without kept edges (logits always kept); features also need an outgoing kept edge
    has_out = edge_mask.any(0)
    node_mask = node_mask & has_out
    node_mask[graph.logit_slice] = True
    edge_mask = edge_mask & node_mask[None, :] & node_mask[:, None]
    return PrunedGraph(node_mask, edge_mask, influence + w)


def graph_scores(graph: AttributionGraph) -> dict[str, float]:
    """circuit-tracer's scores: ``replacement`` = share of the logit influence reaching the logits from tokens
    rather than errors; ``completeness`` = influence-weighted share of node inputs not from error nodes.
    Both are 1 when every error node is zero."""
    A = graph.adjacency
    w = logit_weights(graph)
    norm = normalize_matrix(A)
    influence = compute_influence(norm, w)
    tok = float(influence[graph.token_slice].sum())
    err = float(influence[graph.error_slice].sum())
    replacement = tok / (tok + err) if tok + err > 0 else float("nan")
    non_error = 1 - norm[:, graph.error_slice].sum(-1)
    out_inf = influence + w
    completeness = float((non_error * out_inf).sum() / out_inf.sum())
    return {"replacement_score": replacement, "completeness_score": completeness}


def top_paths(graph: AttributionGraph, pruned: PrunedGraph, k: int = 5, max_len: int = 8) -> list[dict[str, Any]]:
    """The ``k`` strongest paths (product of normalised edge weights) from any token into the top logit,
    through kept edges (a best-first search on the DAG)."""
    import heapq

    names = graph.node_names()
    norm = normalize_matrix(graph.adjacency * pruned.edge_mask)
    start = graph.logit_slice.start  # the top logit
    heap: list[tuple[float, list[int]]] = [(-1.0, [start])]
    found: list[dict[str, Any]] = []
    tokens = set(range(graph.token_slice.start, graph.token_slice.stop))
    while heap and len(found) < k:
        negw, path = heapq.heappop(heap)
        node = path[-1]
        if node in tokens:
            found.append({"weight": -negw, "path": [names[i] for i in reversed(path)]})
            continue
        if len(path) > max_len:
            continue
        row = norm[node]
        for src in row.nonzero()[:, 0].tolist():
            heapq.heappush(heap, (negw * float(row[src]), [*path, src]))
    return found




__all__ = ["PrunedGraph", "prune", "graph_scores", "compute_influence", "normalize_matrix", "top_paths",
           "logit_weights"]
