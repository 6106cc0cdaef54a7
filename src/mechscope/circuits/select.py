"""Choosing a circuit of ``n`` edges from edge scores.

``evaluate`` patches every edge outside the circuit, so a kept edge only matters if it lies on a path from
``input`` to ``logits`` made of kept edges: an edge whose sender has no kept input path computes from
corrupted inputs only and carries the corrupted value (the same as patching it), and an edge into a node
none of whose kept outputs reaches the logits changes nothing downstream. Such edges waste the budget.

Selections (``how``):

* ``abs``: the ``n`` edges of largest |score| (the plain ranking; ``EdgeScores.top``).
* ``signed``: the ``n`` edges whose patching moves the metric most towards the corrupted run (score of the
  sign of ``corrupted - clean``), i.e. only the edges that support the behaviour.
* ``pruned``: the top-k edges by |score| restricted to those on an input -> logits path within them
  (``connected``), with k the largest for which that leaves at most ``n`` edges (pruning is monotone in k,
  so a binary search finds it): the budget goes to edges that can matter.
* ``greedy``: Hanna et al.'s greedy growth from ``logits`` (repeatedly add the edge of largest |score| into
  a node already in the circuit), then pruned like ``pruned`` (its longest prefix that prunes to <= n).

A receiver belongs to a node: ``a{L}.h{H}<q>`` to head ``a{L}.h{H}``, a grouped-query ``a{L}.kv{G}<k|v>``
to every query head of group ``G``, ``m{L}`` to the MLP; ``logits`` is the sink.
"""

from __future__ import annotations

import heapq
from functools import cache
from typing import Literal

import torch
from torch import Tensor

from mechscope.circuits.graph import Graph
from mechscope.circuits.scores import Circuit, EdgeScores
from mechscope.errors import ConfigError

Selection = Literal["abs", "signed", "pruned", "greedy"]
SELECTIONS: tuple[str, ...] = ("abs", "signed", "pruned", "greedy")


@cache
def receiver_nodes(graph: Graph) -> Tensor:
    """bool [n_receivers n_senders]: receiver r is an input of sender node s (``logits``' row is empty)."""
    out = torch.zeros(len(graph.receivers), len(graph.senders), dtype=torch.bool)
    per_group = graph.n_heads // graph.n_kv_heads
    for i, r in enumerate(graph.receivers):
        if r.kind == "logits":
            continue
        base = 1 + r.layer * graph.senders_per_layer
        if r.kind == "q":
            out[i, base + r.index] = True
        elif r.kind in ("k", "v"):
            out[i, base + r.index * per_group: base + (r.index + 1) * per_group] = True
        else:  # mlp
            out[i, base + graph.n_heads] = True
    return out


def connected(graph: Graph, keep: Tensor) -> Tensor:
    """bool [..., n_edges]: the kept edges (``keep`` bool [..., n_edges]) that lie on a path of kept edges
    from ``input`` to ``logits``. Fixed-point iterations over the dense masks (at most depth + 1 each)."""
    k = graph.scatter(keep.float()) > 0  # [... S R]
    owner = receiver_nodes(graph)  # [R S]
    reach = torch.zeros(*k.shape[:-1], dtype=torch.bool)  # senders with a kept path from input
    reach[..., 0] = True
    while True:
        live = (k & reach.unsqueeze(-1)).any(-2)  # receivers fed by a reached sender [... R]
        new = ((live.unsqueeze(-1) & owner).any(-2)) | reach
        if torch.equal(new, reach):
            break
        reach = new
    useful = torch.zeros(*k.shape[:-2], k.shape[-1], dtype=torch.bool)  # receivers that reach the logits
    useful[..., -1] = True
    while True:
        s_useful = (k & useful.unsqueeze(-2)).any(-1)  # senders with a kept edge into a useful receiver
        new = (owner & s_useful.unsqueeze(-2)).any(-1) | useful
        if torch.equal(new, useful):
            break
        useful = new
    return graph.gather((k & reach.unsqueeze(-1) & useful.unsqueeze(-2)).float()) > 0


def _signed_key(scores: EdgeScores) -> Tensor:
    """Larger = supports the behaviour more (patching it moves the metric towards the corrupted run)."""
    clean, corrupted = scores.info.get("clean"), scores.info.get("corrupted")
    if not isinstance(clean, (int, float)) or not isinstance(corrupted, (int, float)):
        raise ConfigError("signed selection needs info['clean'] and info['corrupted'] (the metric baselines)")
    return scores.scores * (1.0 if corrupted >= clean else -1.0)


def _prefix_mask(order: Tensor, k: int, n_edges: int) -> Tensor:
    keep = torch.zeros(n_edges, dtype=torch.bool)
    keep[order[:k]] = True
    return keep


def _largest_pruned_prefix(graph: Graph, order: Tensor, n: int) -> Tensor:
    """``connected`` of the longest prefix of ``order`` that keeps at most ``n`` edges after pruning."""
    total = len(order)
    lo, hi = min(n, total), total  # connected(prefix of n) has <= n edges; find the largest k that does
    best = connected(graph, _prefix_mask(order, lo, graph.n_edges))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        c = connected(graph, _prefix_mask(order, mid, graph.n_edges))
        if int(c.sum()) <= n:
            lo, best = mid, c
        else:
            hi = mid - 1
    return best


def greedy_order(scores: EdgeScores, n: int) -> Tensor:
    """Edge indices in the order greedy growth from ``logits`` adds them (at most ``n``): the edge of largest
    |score| whose receiver belongs to a node already in the circuit, its sender then joins."""
    g = scores.graph
    s_of, r_of = g.edge_cells
    owner = receiver_nodes(g)
    into: list[list[int]] = [[] for _ in g.receivers]  # edge indices per receiver
    for e, r in enumerate(r_of.tolist()):
        into[r].append(e)
    recv_of_sender: list[list[int]] = [[] for _ in g.senders]
    for r, s in owner.nonzero().tolist():
        recv_of_sender[s].append(r)
    key = scores.scores.abs().tolist()
    heap: list[tuple[float, int]] = [(-key[e], e) for e in into[len(g.receivers) - 1]]
    heapq.heapify(heap)
    opened = {len(g.receivers) - 1}  # receivers whose edges are candidates (a kv receiver opens once)
    order: list[int] = []
    while heap and len(order) < n:
        _, e = heapq.heappop(heap)
        order.append(e)
        for r in recv_of_sender[int(s_of[e])]:
            if r not in opened:
                opened.add(r)
                for e2 in into[r]:
                    heapq.heappush(heap, (-key[e2], e2))
    return torch.tensor(order, dtype=torch.long)


def select_mask(scores: EdgeScores, n: int, how: Selection = "abs") -> Tensor:
    """bool [n_edges]: the circuit of at most ``n`` edges that selection ``how`` picks (module docstring)."""
    g = scores.graph
    if not 0 <= n <= g.n_edges:
        raise ConfigError(f"circuit size must be in [0, {g.n_edges}], got {n}")
    if how == "abs":
        return _prefix_mask(torch.sort(scores.scores.abs(), descending=True, stable=True).indices, n, g.n_edges)
    if how == "signed":
        return _prefix_mask(torch.sort(_signed_key(scores), descending=True, stable=True).indices, n, g.n_edges)
    if how == "pruned":
        return _largest_pruned_prefix(g, torch.sort(scores.scores.abs(), descending=True, stable=True).indices, n)
    if how == "greedy":
        return _largest_pruned_prefix(g, greedy_order(scores, g.n_edges), n)
    raise ConfigError(f"selection must be one of {list(SELECTIONS)}, got {how!r}")


def select(scores: EdgeScores, n: int, how: Selection = "abs") -> Circuit:
    """The circuit (edge names) of ``select_mask``."""
    keep = select_mask(scores, n, how).nonzero().flatten().tolist()
    return Circuit(scores.graph, frozenset(scores.graph.edge_names[i] for i in keep))


__all__ = ["SELECTIONS", "Selection", "connected", "greedy_order", "receiver_nodes", "select", "select_mask"]
