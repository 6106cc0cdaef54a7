"""The computational graph every circuit method runs on: frozen ``Node`` / ``Edge`` dataclasses.

Senders write into the residual stream: ``input`` (token + positional embeddings, ``blocks.0.hook_resid_pre``),
each head ``a{L}.h{H}`` (its ``attn.hook_result``) and each MLP ``m{L}`` (``hook_mlp_out``). Receivers read
it: each head's query / key / value input ``a{L}.h{H}<q>``, ``<k>``, ``<v>`` (``hook_q_input`` ...; for
grouped-query models one key / value receiver per key-value head, ``a{L}.kv{G}<k>`` / ``<v>``, so the model
is never "ungrouped"), each MLP ``m{L}`` (``hook_mlp_in``) and ``logits`` (the final residual, before
``ln_final``). A receiver's input is the residual *before* its norm, so the norm's scale is part of the
receiver and pre-norm models are exact. An edge exists from every sender to every receiver that reads the
residual after the sender wrote it: parallel-residual (NeoX) blocks have no ``a{L}.h{H} -> m{L}`` edges.

Sender and receiver indices (``Graph.sender_index``, ``Graph.receiver_index``) lay the graph out as a
dense ``[n_senders n_receivers]`` mask; ``Graph.valid`` marks which cells are edges.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import torch
from torch import Tensor

from mechscope.errors import ConfigError, close_matches

NodeKind = Literal["input", "head", "mlp", "q", "k", "v", "logits"]


class EdgeNameError(ConfigError, KeyError):
    """An edge or node name that is not in the graph; the message lists the closest names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Node:
    """One sender or receiver. ``layer`` is -1 for ``input`` and ``n_layers`` for ``logits``; ``index`` is
    the head (or key-value head for ``k``/``v`` of grouped-query models), 0 otherwise."""

    name: str
    """``input``, ``a{L}.h{H}``, ``m{L}``, ``a{L}.h{H}<q>``, ``a{L}.kv{G}<k>``, ``logits`` ..."""
    kind: NodeKind
    """What the node is (a head's output is ``head``; its inputs are ``q``/``k``/``v``)."""
    layer: int
    """Block index (-1 = before the first block, n_layers = after the last)."""
    index: int = 0
    """Head or key-value-head index within the layer."""


@dataclass(frozen=True)
class Edge:
    """A path sender -> receiver through the residual stream."""

    sender: Node
    """Where the signal is written."""
    receiver: Node
    """Where it is read."""

    @property
    def name(self) -> str:
        """``"{sender}->{receiver}"``, e.g. ``a0.h1->a1.h3<k>``."""
        return f"{self.sender.name}->{self.receiver.name}"


@dataclass(frozen=True)
class Graph:
    """Senders, receivers and edges of one model shape (see the module docstring)."""

    n_layers: int
    """Blocks."""
    n_heads: int
    """Query heads per layer."""
    n_kv_heads: int
    """Key/value heads per layer (== n_heads without grouped-query attention)."""
    has_mlp: bool
    """Whether blocks have MLPs."""
    parallel: bool
    """NeoX-style blocks (the MLP reads the block's input, not the attention's output)."""
    senders: tuple[Node, ...] = field(init=False)
    """Senders in topological order."""
    receivers: tuple[Node, ...] = field(init=False)
    """Receivers in topological order (per layer: q heads, k, v key-value heads, MLP; then logits)."""

    def __post_init__(self) -> None:
        senders = [Node("input", "input", -1)]
        receivers: list[Node] = []
        for L in range(self.n_layers):
            kv = "h" if self.n_kv_heads == self.n_heads else "kv"
            receivers += [Node(f"a{L}.h{h}<q>", "q", L, h) for h in range(self.n_heads)]
            receivers += [Node(f"a{L}.{kv}{g}<k>", "k", L, g) for g in range(self.n_kv_heads)]
            receivers += [Node(f"a{L}.{kv}{g}<v>", "v", L, g) for g in range(self.n_kv_heads)]
            senders += [Node(f"a{L}.h{h}", "head", L, h) for h in range(self.n_heads)]
            if self.has_mlp:
                receivers.append(Node(f"m{L}", "mlp", L))
                senders.append(Node(f"m{L}", "mlp", L))
        receivers.append(Node("logits", "logits", self.n_layers))
        object.__setattr__(self, "senders", tuple(senders))
        object.__setattr__(self, "receivers", tuple(receivers))

    @classmethod
    def from_model(cls, model: Any) -> Graph:
        """The graph of a ``HookedTransformer`` (built from its config only)."""
        cfg = model.cfg
        return cls(n_layers=cfg.n_layers, n_heads=cfg.attention.n_heads, n_kv_heads=cfg.attention.kv_heads,
                   has_mlp=cfg.mlp is not None, parallel=cfg.parallel_attn_mlp)

    # -- layout ----------------------------------------------------------------------------------
    @property
    def senders_per_layer(self) -> int:
        """Heads plus (if any) the MLP."""
        return self.n_heads + int(self.has_mlp)

    def n_senders_before(self, receiver: Node) -> int:
        """How many senders (a prefix of ``senders``) write before ``receiver`` reads."""
        if receiver.kind == "logits":
            return len(self.senders)
        n = 1 + receiver.layer * self.senders_per_layer
        if receiver.kind == "mlp" and not self.parallel:
            n += self.n_heads
        return n

    @cached_property
    def sender_index(self) -> dict[str, int]:
        """Sender name -> row of the dense mask."""
        return {n.name: i for i, n in enumerate(self.senders)}

    @cached_property
    def receiver_index(self) -> dict[str, int]:
        """Receiver name -> column of the dense mask."""
        return {n.name: i for i, n in enumerate(self.receivers)}

    def receiver_block(self, layer: int) -> tuple[int, int, int]:
        """Column range of layer ``layer``'s receivers: (start, end of the attention inputs, end)."""
        per = self.n_heads + 2 * self.n_kv_heads + int(self.has_mlp)
        start = layer * per
        return start, start + self.n_heads + 2 * self.n_kv_heads, start + per

    @cached_property
    def valid(self) -> Tensor:
        """bool [n_senders n_receivers]: True where (sender, receiver) is an edge."""
        counts = torch.tensor([self.n_senders_before(r) for r in self.receivers])
        return torch.arange(len(self.senders))[:, None] < counts[None, :]

    @cached_property
    def edges(self) -> tuple[Edge, ...]:
        """Every edge, in topological order of receivers, then senders."""
        return tuple(Edge(self.senders[s], r) for r in self.receivers for s in range(self.n_senders_before(r)))

    @cached_property
    def edge_names(self) -> list[str]:
        """Names of ``edges`` (same order)."""
        return [e.name for e in self.edges]

    @cached_property
    def edge_index(self) -> dict[str, int]:
        """Edge name -> position in ``edges``."""
        return {n: i for i, n in enumerate(self.edge_names)}

    @cached_property
    def edge_cells(self) -> tuple[Tensor, Tensor]:
        """(sender rows, receiver columns) [n_edges] of every edge in ``edges`` order (receiver-major, then
        sender: the nonzeros of ``valid`` transposed; no ``Edge`` objects are built)."""
        r, s = self.valid.t().nonzero(as_tuple=True)
        return s, r

    @cached_property
    def n_edges(self) -> int:
        """``len(edges)``, without building the ``Edge`` objects."""
        return int(self.valid.sum())

    def __len__(self) -> int:
        return self.n_edges

    def __iter__(self) -> Iterator[Edge]:
        return iter(self.edges)

    # -- names -----------------------------------------------------------------------------------
    def edge(self, name: str) -> Edge:
        """The edge called ``name``; an unknown name raises ``EdgeNameError`` with the closest names."""
        i = self.edge_index.get(name)
        if i is None:
            raise self._unknown(name)
        return self.edges[i]

    def indices(self, names: list[str] | tuple[str, ...] | set[str] | frozenset[str]) -> Tensor:
        """Positions in ``edges`` of ``names`` (every name checked)."""
        out = []
        for n in names:
            i = self.edge_index.get(n)
            if i is None:
                raise self._unknown(n)
            out.append(i)
        return torch.tensor(out, dtype=torch.long)

    def mask(self, names: list[str] | tuple[str, ...] | set[str] | frozenset[str]) -> Tensor:
        """float [n_senders n_receivers]: 1 at the cells of ``names``, 0 elsewhere."""
        return self.scatter(torch.zeros(len(self.edges)).index_fill_(0, self.indices(names), 1.0))

    def scatter(self, values: Tensor) -> Tensor:
        """Per-edge values [*variants n_edges] -> dense [*variants n_senders n_receivers] (0 off the edges)."""
        s, r = self.edge_cells
        out = values.new_zeros(*values.shape[:-1], len(self.senders), len(self.receivers))
        out[..., s, r] = values
        return out

    def gather(self, dense: Tensor) -> Tensor:
        """Dense [*variants n_senders n_receivers] -> per-edge [*variants n_edges] (inverse of ``scatter``)."""
        s, r = self.edge_cells
        return dense[..., s, r]

    def _unknown(self, name: str) -> EdgeNameError:
        near = close_matches(name, self.edge_names)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        return EdgeNameError(
            f"Unknown edge {name!r}.{hint} Edges are named 'sender->receiver' with senders input, a{{L}}.h{{H}}, "
            f"m{{L}} and receivers a{{L}}.h{{H}}<q|k|v> (grouped-query: a{{L}}.kv{{G}}<k|v>), m{{L}}, logits; "
            f"this graph has {len(self.edges)} edges (graph.edge_names lists them).")


__all__ = ["Edge", "EdgeNameError", "Graph", "Node"]
