"""ACDC (Conmy et al. 2023): greedy pruning of edges in reverse topological order.

Starting from the full graph, each edge (receivers from ``logits`` back to layer 0, each receiver's senders
latest first) is patched on top of the edges already removed; if the objective rises by less than
``threshold`` the edge stays removed. Objectives: ``kl`` (mean KL divergence from the clean model's output
distribution at the readout) or ``metric`` (``|mean metric - clean mean metric|``). The ablation (corrupted
prompts, resample, mean, zero) is the ``Problem``'s.

**Batched, exactly the sequential result.** Each decision depends on the ones before it, so one forward
tests a chain of ``chunk`` variants built on guesses: variant v removes edge v on top of every earlier chain
edge guessed "removed" (most edges are; an edge is guessed "kept" when a discarded earlier test said so).
The decisions are then replayed in order; each is exactly the one-edge-at-a-time reference's while the
guesses hold, and at the first wrong guess the replay stops (that decision is still exact, its state was
right) and the next chain starts after it. The chain length adapts: doubled after a chain whose guesses
all held, halved after a miss, at most ``chunk``. Each variant is computed as
its own rows of the batch, so its numbers do not depend on its neighbours (the test checks bit equality).

Chains stay within one receiver, so their variants differ only in that receiver's mask column and start
at its layer from the cached clean prefix (``circuits/resume.py``; for ``logits`` only the final norm and
unembedding run); the one-edge-at-a-time reference (``batched=False``) runs one full patched forward per
edge. ``receivers=[names]`` sweeps only those receivers (benchmarks measure a prefix of the order).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mechscope.circuits.graph import Graph
from mechscope.circuits.problem import Problem
from mechscope.circuits.resume import ResumeForward
from mechscope.circuits.scores import EdgeScores
from mechscope.errors import ConfigError, close_matches

Objective = Literal["kl", "metric"]


class _Objective:
    """The objective of a set of patched edges, per variant."""

    def __init__(self, problem: Problem, objective: Objective) -> None:
        if objective not in ("kl", "metric"):
            raise ConfigError(f"ACDC objective must be 'kl' or 'metric', got {objective!r}")
        self.problem, self.kind = problem, objective
        g = problem.graph
        with torch.no_grad():
            logits = problem.logits(torch.zeros(1, len(g.senders), len(g.receivers)))
            clean_logp = torch.log_softmax(logits.float(), dim=-1)
            self.clean_p = clean_logp.exp()
            self.clean_entropy = (self.clean_p * clean_logp).sum(-1)  # -H(p) [B pos]
            self.clean_metric = float(problem.call_metric(logits).mean())
            self.start = self.values(logits, 1)[0]
        """The objective with nothing patched (0 up to rounding)."""
        self.resume: ResumeForward | None = None

    def __call__(self, patched: Tensor, col: int | None = None) -> list[float]:
        """patched: per-edge 0/1 [V n_edges] -> objective per variant. With ``col`` (the receiver whose
        edges alone differ between the variants) and a ``resume`` engine, the variants start at its layer."""
        p = self.problem
        with torch.no_grad():
            masks = p.graph.scatter(patched)
            if self.resume is not None and col is not None and self.resume.applies(patched, col):
                p.forwards += 1
                logits = self.resume.logits(masks, col)
            else:
                logits = p.logits(masks)
            return self.values(logits, patched.shape[0])

    def values(self, logits: Tensor, V: int) -> list[float]:
        """The objective of each variant's logits [V*B pos vocab]."""
        if self.kind == "kl":  # KL(clean || patched) = sum p log p - sum p log q, per example and position
            lp = torch.log_softmax(logits.float(), dim=-1).view(V, *self.clean_p.shape)
            kl = (self.clean_entropy - (self.clean_p * lp).sum(-1)).mean(-1)  # [V B]
            return kl.mean(1).tolist()
        rows = logits.shape[0] // V
        vals = [float(self.problem.call_metric(logits[v * rows:(v + 1) * rows]).mean()) for v in range(V)]
        return [abs(v - self.clean_metric) for v in vals]


def _chain(patched: Tensor, chain: list[int], guess_kept: Tensor) -> tuple[Tensor, list[int]]:
    """Variants [len(chain) n_edges]: variant v removes chain[v] on top of the state the guesses predict
    (every earlier chain edge guessed removed is removed), and ``before[v]``, the variant whose state that
    is (-1 = the current state)."""
    variants = patched.repeat(len(chain), 1)
    state, last = patched.clone(), -1
    before = []
    for v, e in enumerate(chain):
        variants[v] = state
        variants[v, e] = 1.0
        before.append(last)
        if not bool(guess_kept[e]):
            state, last = variants[v].clone(), v
    return variants, before


def _sweep_columns(graph: Graph, receivers: list[str] | None) -> list[int]:
    """Receiver columns to sweep, in reverse topological order (every receiver by default)."""
    if receivers is None:
        return list(range(len(graph.receivers) - 1, -1, -1))
    cols = []
    for name in receivers:
        c = graph.receiver_index.get(name)
        if c is None:
            near = close_matches(name, graph.receiver_index)
            raise ConfigError(f"unknown receiver {name!r}" + (f"; did you mean {', '.join(near)}?" if near else "")
                              + " (receivers: a{L}.h{H}<q|k|v>, a{L}.kv{G}<k|v>, m{L}, logits)")
        cols.append(c)
    return sorted(set(cols), reverse=True)


def _variant_cap(problem: Problem, col: int, budget: float = 1.5e9) -> int:
    """How many variants fit the memory ``budget`` when they start at ``col``'s layer: each keeps the
    differences of every sender from that layer on and its own per-head attention inputs."""
    g = problem.graph
    layer = g.receivers[col].layer
    later = len(g.senders) - g.n_senders_before(g.receivers[g.receiver_block(layer)[0]]) if layer < g.n_layers else 0
    cols = g.n_heads + 2 * g.n_kv_heads + 1
    per = (later + 2 * cols) * problem.clean.numel() * problem.model.cfg.d_model * 4
    return max(1, int(budget // max(per, 1)))


def acdc(problem: Problem, threshold: float = 0.01, objective: Objective = "kl", batched: bool = True,
         chunk: int = 32, receivers: list[str] | None = None) -> EdgeScores:
    """Run ACDC; ``EdgeScores.kept`` is its circuit, each score the objective's rise when the edge was tested.

    ``receivers`` restricts the sweep to those receivers' edges (the others are kept, score 0); the
    receivers first in reverse topological order (``logits``, the last layer's ...) give exactly the first
    decisions of the full run. ``batched=False`` is the one-edge-at-a-time reference (one full patched
    forward per edge); ``batched=True`` tests up to ``chunk`` edges into one receiver per forward, started
    at the receiver's layer (``circuits/resume.py``), with the reference's bits.
    """
    if threshold < 0:
        raise ConfigError(f"ACDC threshold must be >= 0, got {threshold}")
    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1, got {chunk}")
    g = problem.graph
    n = len(g.edges)
    cols = _sweep_columns(g, receivers)
    obj = _Objective(problem, objective)
    patched = torch.zeros(n)
    scores = torch.zeros(n)
    current = obj.start
    if batched:
        obj.resume = ResumeForward(problem.model, g, problem.clean, problem.patch, problem.readout)
    starts = [0]
    for r in g.receivers:
        starts.append(starts[-1] + g.n_senders_before(r))
    guess_kept = torch.zeros(n, dtype=torch.bool)  # speculation: removed, unless a stale test said kept
    step, n_variants = min(4, chunk) if batched else 1, 0
    for col in cols:
        order = list(range(starts[col + 1] - 1, starts[col] - 1, -1))  # this receiver's senders, latest first
        cap = _variant_cap(problem, col) if batched else 1
        i = 0
        while i < len(order):
            chain = order[i:i + min(step, cap)]
            variants, before = _chain(patched, chain, guess_kept)
            values = obj(variants, col)
            n_variants += len(chain)
            broke = False
            for v, e in enumerate(chain):
                base = current if before[v] < 0 else values[before[v]]
                rise = values[v] - base
                if broke:  # computed on a wrong assumption: keep it only as a guess for the next chain
                    guess_kept[e] = rise >= threshold
                    continue
                scores[e] = rise
                i += 1
                removed = rise < threshold
                if removed:
                    patched[e] = 1.0
                    current = values[v]
                broke = removed == bool(guess_kept[e])  # the chain assumed the other outcome
            if batched:  # longer chains while the guesses hold, shorter after a miss (fewer wasted variants)
                step = max(1, step // 2) if broke else min(chunk, step * 2)
    kept = frozenset(g.edge_names[j] for j in (patched == 0).nonzero().flatten().tolist())
    return EdgeScores(g, scores, "acdc", kept=kept,
                      info={"clean": problem.clean_value, "corrupted": problem.corrupted_value,
                            "threshold": threshold, "objective": objective, "batched": batched,
                            "final_objective": current, "forwards": problem.forwards, "variants": n_variants,
                            "ablation": problem.ablation, "receivers_swept": len(cols)})


__all__ = ["acdc"]
