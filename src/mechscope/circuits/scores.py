"""``EdgeScores`` (one number per edge, from any method) and ``Circuit`` (a set of edge names).

A score is the (estimated) change of the mean metric when that edge alone is patched, so methods are
comparable: exact patching measures it, EAP estimates it to first order, EAP-IG integrates the gradient,
ACDC records the change of its own objective when it tested the edge. Ranking uses ``|score|``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mechscope.circuits.graph import Graph
from mechscope.errors import ConfigError


@dataclass(frozen=True)
class Circuit:
    """A subgraph: the edges kept (every other edge is patched when the circuit is evaluated)."""

    graph: Graph
    """The graph the names belong to."""
    edges: frozenset[str]
    """Kept edge names."""

    def __post_init__(self) -> None:
        self.graph.indices(self.edges)  # every name checked (unknown -> close matches)

    def __len__(self) -> int:
        return len(self.edges)

    def __contains__(self, name: object) -> bool:
        return name in self.edges

    @property
    def fraction(self) -> float:
        """Kept edges / all edges."""
        return len(self.edges) / len(self.graph.edges)

    def nodes(self) -> set[str]:
        """Components (``input``, ``a{L}.h{H}``, ``m{L}``, ``logits``) touched by a kept edge; a receiver
        ``a3.h2<q>`` counts as head ``a3.h2`` (``a3.kv1<k>`` as ``a3.kv1``)."""
        out: set[str] = set()
        for name in self.edges:
            s, r = name.split("->")
            out.add(s)
            out.add(r.split("<")[0])
        return out

    def sorted_edges(self) -> list[str]:
        """Kept names in the graph's topological order."""
        return [self.graph.edge_names[int(i)] for i in self.graph.indices(self.edges).sort().values]


@dataclass(frozen=True)
class EdgeScores:
    """One float per edge of ``graph`` (``scores[i]`` belongs to ``graph.edge_names[i]``)."""

    graph: Graph
    """The graph scored."""
    scores: Float[Tensor, " n_edges"]
    """Estimated change of the mean metric when the edge alone is patched (see module docstring)."""
    method: str
    """Method that produced the scores."""
    kept: frozenset[str] | None = None
    """The method's own circuit when it decides one (ACDC); None for pure scorers."""
    info: dict[str, Any] = field(default_factory=dict)
    """Method details (clean / corrupted metric, forwards run, options)."""

    def __post_init__(self) -> None:
        if self.scores.shape != (self.graph.n_edges,):
            raise ConfigError(f"EdgeScores needs one score per edge ({self.graph.n_edges}), "
                              f"got shape {tuple(self.scores.shape)}")

    def to_dict(self) -> dict[str, float]:
        """{edge name: score}."""
        return dict(zip(self.graph.edge_names, self.scores.tolist()))

    def ranked(self, n: int | None = None) -> list[tuple[str, float]]:
        """(name, score) sorted by |score|, largest first (ties in topological order)."""
        order = torch.sort(self.scores.abs(), descending=True, stable=True).indices
        if n is not None:
            order = order[:n]
        return [(self.graph.edge_names[int(i)], float(self.scores[i])) for i in order]

    def top(self, n: int) -> Circuit:
        """The ``n`` edges with the largest |score|."""
        if not 0 <= n <= len(self.graph.edges):
            raise ConfigError(f"top(n): n must be in [0, {len(self.graph.edges)}], got {n}")
        return Circuit(self.graph, frozenset(name for name, _ in self.ranked(n)))

    def threshold(self, t: float) -> Circuit:
        """Edges with |score| >= t."""
        keep = (self.scores.abs() >= t).nonzero().flatten().tolist()
        return Circuit(self.graph, frozenset(self.graph.edge_names[i] for i in keep))

    def circuit(self) -> Circuit:
        """The method's own circuit (ACDC's kept edges)."""
        if self.kept is None:
            raise ConfigError(f"method {self.method!r} scores edges but does not choose a circuit; "
                              "use .top(n) or .threshold(t)")
        return Circuit(self.graph, self.kept)

    def node_scores(self) -> dict[str, float]:
        """Node-level attribution: per sender, the sum of its edges' scores. For the gradient methods this
        is the attribution of patching the sender's whole output (every reader of the residual stream is a
        receiver, so the sender's gradient is the sum of its receivers' gradients)."""
        s, _ = self.graph.edge_cells
        sums = torch.zeros(len(self.graph.senders)).index_add_(0, s, self.scores.float())
        return {n.name: float(v) for n, v in zip(self.graph.senders, sums)}

    def to_json(self, n: int | None = 200) -> str:
        """JSON: method, info and the top ``n`` edges by |score|."""
        return json.dumps({"method": self.method, "n_edges_total": len(self.graph.edges),
                           "info": self.info, "edges": [[k, v] for k, v in self.ranked(n)]})

    def save(self, path: str | os.PathLike[str]) -> Path:
        """One safetensors file (atomic write): the scores, and as metadata the graph's shape, the method,
        the kept edges (ACDC) and the JSON-serialisable part of ``info``; ``EdgeScores.load`` reads it back, so
        many circuits can be selected and evaluated from one costly run."""
        from safetensors.torch import save_file

        from mechscope.io_safety import atomic_write

        g = self.graph
        meta = {"graph": json.dumps({"n_layers": g.n_layers, "n_heads": g.n_heads, "n_kv_heads": g.n_kv_heads,
                                     "has_mlp": g.has_mlp, "parallel": g.parallel}),
                "method": self.method, "info": json.dumps(_jsonable(self.info)),
                "kept": json.dumps(None if self.kept is None else sorted(self.kept))}
        scores = self.scores.detach().contiguous()
        return atomic_write(path, lambda tmp: save_file({"scores": scores}, str(tmp), metadata=meta))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EdgeScores:
        """Scores written by ``save`` (the graph is rebuilt from its recorded shape)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "graph" not in meta or "scores" not in set(f.keys()):
                raise ConfigError(f"{path} is not an EdgeScores file (no graph metadata / scores tensor)")
            scores = f.get_tensor("scores")
        kept = json.loads(meta.get("kept", "null"))
        return cls(Graph(**json.loads(meta["graph"])), scores, meta.get("method", "?"),
                   None if kept is None else frozenset(kept), json.loads(meta.get("info", "{}")))

    def _repr_html_(self) -> str:
        """Inline rendering in Jupyter: method, the metric baselines when known, the top 10 edges."""
        from mechscope.viz.report import esc, table_html

        base = ", ".join(f"{k} {self.info[k]:+.3f}" for k in ("clean", "corrupted")
                         if isinstance(self.info.get(k), (int, float)))
        head = (f"<p><b>EdgeScores</b> ({esc(self.method)}): {len(self.graph.edges)} edges"
                + (f"; metric {esc(base)}" if base else "") + "</p>")
        return head + table_html([{"edge": k, "score": v} for k, v in self.ranked(10)], floatfmt="{:+.4f}")


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``info`` JSON can hold."""
    out = {}
    for k, v in info.items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[k] = v
    return out


__all__ = ["Circuit", "EdgeScores"]
