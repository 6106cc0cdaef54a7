"""Compile a RASP program (``rasp/lang.py``) into a ``HookedTransformer`` with known weights and wiring.

Layout (as in tracr): the residual stream is a direct sum of one subspace per SOp (categorical: one
dimension per value, one-hot; numerical: one dimension) plus a BOS flag. Token ids are ``0`` = BOS (always
at position 0) and ``1 + i`` for ``vocab[i]``; position ``p >= 1`` holds sequence index ``p - 1``.

* ``Aggregate`` → one attention head: Q reads the query SOp, K the key SOp, V the averaged SOp, O writes
  the output SOp. Scores are ``sharpness`` for a selected key, 0 otherwise; the BOS key scores
  ``sharpness / 2`` (through ``b_Q`` and the BOS flag), so a query with no selected key reads BOS, whose
  value is zero (the default).
* ``SelectorWidth`` → a head whose BOS key scores like a selected key and whose value is the BOS flag, so it
  writes ``1 / (width + 1)`` into a hidden dimension, then an MLP decoding that number into one-hot width.
* ``Map`` / ``SequenceMap`` → MLP neurons (ReLU, biases): a categorical input is a lookup table (one neuron
  per value, or per pair of values); a numerical input with finite value set ``u_1 < ... < u_m`` is a
  staircase of ramps between consecutive values (wide ramps, so gradients are not zero almost everywhere).
  Every neuron is switched off at the BOS position (a ``-gate`` weight on the BOS flag), so MLP outputs
  are zero there.

Layers: an SOp sits at the first attention (Aggregate) or MLP (Map) sublayer after everything it reads;
several heads share a layer; several Maps share one MLP (their neurons side by side). Unused heads, MLP
neurons and dimensions are exactly zero.

Wiring and truth. Every read of a receiver (a head's q / k / v input, an MLP, the logits) names the
component that wrote that SOp: ``input`` for tokens, indices and the BOS flag, ``a{L}.h{H}`` for a head,
``m{L}`` for an MLP; the edge is ``"{sender}->{receiver}"``. ``wiring`` holds every read. ``edges`` (the
ground truth) keeps the reads of *token-dependent* SOps only: indices, the BOS flag and SOps computed from
them alone are the same on any two inputs of equal length, so an edge carrying only them has no effect
when a clean run is patched with a corrupted one (exactly zero, by the disjoint subspaces).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechscope.circuits.truth.rasp.lang import (
    Aggregate,
    Indices,
    Map,
    SelectorWidth,
    SequenceMap,
    SOp,
    Tokens,
    topological,
)
from mechscope.errors import ConfigError, TokenError
from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig, PositionalConfig
from mechscope.models.transformer import HookedTransformer

BOS = 0
"""Token id of the beginning-of-sequence token every compiled model expects at position 0."""


@dataclass(frozen=True, eq=False)
class CompiledProgram:
    """A compiled RASP program: the model, how to encode inputs / decode outputs, and its edges."""

    model: HookedTransformer
    """The model (eval mode), exact weights."""
    output: SOp
    """The program's output SOp."""
    vocab: tuple[Any, ...]
    """Input values; ``vocab[i]`` has token id ``1 + i``."""
    max_len: int
    """Longest input sequence (without BOS)."""
    edges: frozenset[str]
    """Ground-truth edges: reads of token-dependent SOps (module docstring)."""
    wiring: frozenset[str]
    """Every read of every receiver (a superset of ``edges``)."""
    layout: dict[str, tuple[int, int]]
    """Residual stream slice ``[start, stop)`` of each SOp label (and ``"bos"``)."""

    def encode(self, seqs: Sequence[Sequence[Any]]) -> Int[Tensor, "batch pos"]:
        """Token ids ``[batch 1+len]`` (BOS first) of equally long input sequences."""
        if not seqs or len({len(s) for s in seqs}) != 1:
            raise TokenError("encode needs a non-empty list of equally long sequences")
        if len(seqs[0]) > self.max_len:
            raise TokenError(f"sequences of length {len(seqs[0])} exceed this program's max_len={self.max_len}")
        index = {v: i + 1 for i, v in enumerate(self.vocab)}
        try:
            rows = [[BOS] + [index[v] for v in s] for s in seqs]
        except KeyError as e:
            raise TokenError(f"value {e.args[0]!r} is not in this program's vocabulary {list(self.vocab)}") from None
        return torch.tensor(rows, dtype=torch.long)

    def decode(self, logits: Float[Tensor, "batch pos vocab"]) -> list[list[Any]]:
        """Program outputs per sequence position (BOS dropped): the value whose logit is largest (None when
        no logit exceeds 0.5, the default of an aggregate that selected nothing), or the number."""
        out = logits[:, 1:].detach()
        if self.output.encoding == "numerical":
            return [[float(v) for v in row[:, 0]] for row in out]
        best = out.max(-1)
        vals = self.output.values
        return [[vals[int(i)] if float(m) > 0.5 else None for m, i in zip(ms, ix)]
                for ms, ix in zip(best.values, best.indices)]


@dataclass
class _Place:
    """Where an SOp is computed: ``level`` (2L = attention of block L, 2L+1 = its MLP) and slot."""

    level: int
    head: int = -1


def _next(level: int, parity: int) -> int:
    """Smallest level > ``level`` with ``level % 2 == parity``."""
    n = level + 1
    return n if n % 2 == parity else n + 1


def compile_program(output: SOp, *, vocab: Sequence[Any], max_len: int, sharpness: float = 20.0,
                    gate: float = 100.0, seed: int = 0) -> CompiledProgram:
    """Compile ``output`` for inputs over ``vocab`` of length <= ``max_len`` (see the module docstring)."""
    nodes = topological(output)
    for s in nodes:
        if isinstance(s, Tokens) and set(s.values) != set(vocab):
            raise ConfigError(f"the program's tokens SOp has values {list(s.values)}, but vocab={list(vocab)}")
        if isinstance(s, Indices) and len(s.values) != max_len:
            raise ConfigError(f"the program's indices SOp has length {len(s.values)}, but max_len={max_len}")
    layout = _layout(nodes)
    place, sw_head, heads, mlps = _placement(nodes)
    n_layers = max(p.level for p in place.values()) // 2 + 1
    n_heads = max([len(v) for v in heads.values()] + [1])
    d_head = max([_head_dims(s) for s in nodes if isinstance(s, (Aggregate, SelectorWidth))] + [1])
    hidden = {lvl: sum(_n_neurons(s) for s in ss) for lvl, ss in mlps.items()}
    d_mlp = max(hidden.values(), default=0)
    d_model = max(stop for _, stop in layout.values())
    vocab_out = len(output.values) if output.encoding == "categorical" else 1
    cfg = ModelConfig(d_model=d_model, n_layers=n_layers, d_vocab=len(vocab) + 1, n_ctx=max_len + 1,
                      attention=AttentionConfig(n_heads=n_heads, d_head=d_head, qkv_bias=True, scale=1.0),
                      mlp=MLPConfig(d_mlp=d_mlp, act="relu", bias=True) if d_mlp else None,
                      norm=NormConfig(kind="none"), positional=PositionalConfig(kind="learned"),
                      d_vocab_out=vocab_out, name=f"rasp:{output.label}", architecture="toy")
    model = HookedTransformer(cfg, seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        _embed(model, layout, nodes, vocab, max_len)
        for s in nodes:
            if isinstance(s, (Aggregate, SelectorWidth)):
                lvl, h = (sw_head[s.uid] if isinstance(s, SelectorWidth) else (place[s.uid].level, place[s.uid].head))
                _head(model.blocks[lvl // 2].attn, h, s, layout, sharpness)
        for lvl, ss in mlps.items():
            _mlp(model.blocks[lvl // 2].mlp, ss, layout, gate)
        _unembed(model, output, layout)
    model.eval()
    wiring, edges = _edges(nodes, output, place, sw_head)
    return CompiledProgram(model=model, output=output, vocab=tuple(vocab), max_len=max_len, edges=edges,
                           wiring=wiring, layout=layout)


# -- layout and placement --------------------------------------------------------------------------
def _width(s: SOp) -> int:
    return len(s.values) if s.encoding == "categorical" else 1


def _layout(nodes: list[SOp]) -> dict[str, tuple[int, int]]:
    layout: dict[str, tuple[int, int]] = {"bos": (0, 1)}
    at = 1
    for s in nodes:
        if s.label in layout:
            raise ConfigError(f"two SOps share the label {s.label!r}; labels must be unique in a program")
        layout[s.label] = (at, at + _width(s))
        at += _width(s)
        if isinstance(s, SelectorWidth):
            layout[_sw_hidden(s)] = (at, at + 1)
            at += 1
    return layout


def _sw_hidden(s: SelectorWidth) -> str:
    return f"{s.label}/inverse_width"


def _placement(nodes: list[SOp]) -> tuple[dict[int, _Place], dict[int, tuple[int, int]], dict[int, list[SOp]],
                                          dict[int, list[SOp]]]:
    """Levels of every SOp, the attention slot of each SelectorWidth, heads per level, MLP SOps per level."""
    place: dict[int, _Place] = {}
    sw_head: dict[int, tuple[int, int]] = {}
    heads: dict[int, list[SOp]] = {}
    mlps: dict[int, list[SOp]] = {}
    for s in nodes:
        below = max([place[c.uid].level for c in s.children] + [-1])
        if isinstance(s, (Tokens, Indices)):
            place[s.uid] = _Place(-1)
        elif isinstance(s, Aggregate):
            lvl = _next(below, 0)
            heads.setdefault(lvl, []).append(s)
            place[s.uid] = _Place(lvl, len(heads[lvl]) - 1)
        elif isinstance(s, SelectorWidth):
            lvl = _next(below, 0)
            heads.setdefault(lvl, []).append(s)
            sw_head[s.uid] = (lvl, len(heads[lvl]) - 1)
            mlps.setdefault(lvl + 1, []).append(s)
            place[s.uid] = _Place(lvl + 1)
        elif isinstance(s, (Map, SequenceMap)):
            lvl = _next(below, 1)
            mlps.setdefault(lvl, []).append(s)
            place[s.uid] = _Place(lvl)
        else:
            raise ConfigError(f"cannot compile SOp type {type(s).__name__}")
    return place, sw_head, heads, mlps


def _head_dims(s: Aggregate | SelectorWidth) -> int:
    q = len(s.selector.queries.values) + 1  # + the BOS slot
    v = 1 if isinstance(s, SelectorWidth) else _width(s.sop)
    return max(q, v)


def _staircase_inputs(s: SOp) -> list[tuple[float, Any]]:
    """(input value, output value) pairs of a numerical-input MLP, sorted by input."""
    if isinstance(s, SelectorWidth):
        return sorted((1.0 / (w + 1), w) for w in s.values)
    assert isinstance(s, Map)
    return sorted((float(u), s.fn(u)) for u in s.inner.values)


def _n_neurons(s: SOp) -> int:
    if isinstance(s, SequenceMap):
        return len(s.a.values) * len(s.b.values)
    if isinstance(s, Map) and s.inner.encoding == "categorical":
        return len(s.inner.values)
    return 1 + 2 * (len(_staircase_inputs(s)) - 1)


# -- weights ---------------------------------------------------------------------------------------
def _embed(model: HookedTransformer, layout: dict[str, tuple[int, int]], nodes: list[SOp], vocab: Sequence[Any],
           max_len: int) -> None:
    model.W_E[BOS, layout["bos"][0]] = 1.0
    tok = next((s for s in nodes if isinstance(s, Tokens)), None)
    idx = next((s for s in nodes if isinstance(s, Indices)), None)
    if tok is not None:
        start = layout[tok.label][0]
        for i, v in enumerate(vocab):
            model.W_E[1 + i, start + tok.values.index(v)] = 1.0
    if idx is not None:
        start = layout[idx.label][0]
        for i in range(max_len):
            model.W_pos[1 + i, start + i] = 1.0


def _head(attn: Any, h: int, s: Aggregate | SelectorWidth, layout: dict[str, tuple[int, int]], sharp: float) -> None:
    sel = s.selector
    qs, ks = sel.queries, sel.keys
    q0, k0, bos = layout[qs.label][0], layout[ks.label][0], layout["bos"][0]
    nq = len(qs.values)
    for i, qv in enumerate(qs.values):
        attn.W_Q[h, q0 + i, i] = sharp
        for j, kv in enumerate(ks.values):
            if sel.predicate(kv, qv):
                attn.W_K[h, k0 + j, i] = 1.0
    attn.b_Q[h, nq] = sharp
    attn.W_K[h, bos, nq] = 1.0 if isinstance(s, SelectorWidth) else 0.5
    if isinstance(s, SelectorWidth):
        attn.W_V[h, bos, 0] = 1.0
        attn.W_O[h, 0, layout[_sw_hidden(s)][0]] = 1.0
        return
    v0, o0 = layout[s.sop.label][0], layout[s.label][0]
    for i in range(_width(s.sop)):
        attn.W_V[h, v0 + i, i] = 1.0
        attn.W_O[h, i, o0 + i] = 1.0


def _vec(s: SOp, value: Any, d_model: int, layout: dict[str, tuple[int, int]]) -> Tensor:
    """The residual-stream vector of ``value`` of SOp ``s`` (zero for None)."""
    out = torch.zeros(d_model)
    if value is None:
        return out
    start = layout[s.label][0]
    if s.encoding == "numerical":
        out[start] = float(value)
    else:
        out[start + s.values.index(value)] = 1.0
    return out


def _mlp(mlp: Any, ss: list[SOp], layout: dict[str, tuple[int, int]], gate: float) -> None:
    bos = layout["bos"][0]
    d = mlp.W_in.shape[0]
    n = 0
    for s in ss:
        if isinstance(s, SequenceMap):
            a0, b0 = layout[s.a.label][0], layout[s.b.label][0]
            for i, av in enumerate(s.a.values):
                for j, bv in enumerate(s.b.values):
                    mlp.W_in[a0 + i, n] = mlp.W_in[b0 + j, n] = 1.0
                    mlp.W_in[bos, n], mlp.b_in[n] = -gate, -1.0
                    mlp.W_out[n] = _vec(s, s.fn(av, bv), d, layout)
                    n += 1
        elif isinstance(s, Map) and s.inner.encoding == "categorical":
            i0 = layout[s.inner.label][0]
            for i, v in enumerate(s.inner.values):
                mlp.W_in[i0 + i, n], mlp.W_in[bos, n] = 1.0, -gate
                mlp.W_out[n] = _vec(s, s.fn(v), d, layout)
                n += 1
        else:
            x = layout[_sw_hidden(s)][0] if isinstance(s, SelectorWidth) else layout[s.inner.label][0]  # type: ignore[attr-defined]
            pairs = _staircase_inputs(s)
            mlp.W_in[bos, n], mlp.b_in[n] = -gate, 1.0  # "one" (0 at BOS)
            mlp.W_out[n] = _vec(s, pairs[0][1], d, layout)
            n += 1
            for (u0, f0), (u1, f1) in zip(pairs, pairs[1:]):
                gap = u1 - u0
                lo, hi = u0 + 0.1 * gap, u1 - 0.1 * gap
                step = (_vec(s, f1, d, layout) - _vec(s, f0, d, layout)) / (hi - lo)
                for cut, sign in ((lo, 1.0), (hi, -1.0)):
                    mlp.W_in[x, n], mlp.W_in[bos, n], mlp.b_in[n] = 1.0, -gate, -cut
                    mlp.W_out[n] = sign * step
                    n += 1


def _unembed(model: HookedTransformer, output: SOp, layout: dict[str, tuple[int, int]]) -> None:
    start = layout[output.label][0]
    for i in range(_width(output)):
        model.W_U[start + i, i] = 1.0


# -- edges -----------------------------------------------------------------------------------------
def _edges(nodes: list[SOp], output: SOp, place: dict[int, _Place],
           sw_head: dict[int, tuple[int, int]]) -> tuple[frozenset[str], frozenset[str]]:
    dependent: dict[int, bool] = {}
    for s in nodes:
        dependent[s.uid] = isinstance(s, Tokens) or any(dependent[c.uid] for c in s.children)

    def sender(s: SOp) -> str:
        p = place[s.uid]
        if p.level < 0:
            return "input"
        return f"a{p.level // 2}.h{p.head}" if p.head >= 0 else f"m{p.level // 2}"

    reads: list[tuple[str, str, bool]] = [(sender(output), "logits", dependent[output.uid])]
    for s in nodes:
        if isinstance(s, (Aggregate, SelectorWidth)):
            lvl, h = sw_head[s.uid] if isinstance(s, SelectorWidth) else (place[s.uid].level, place[s.uid].head)
            name = f"a{lvl // 2}.h{h}"
            sel = s.selector
            reads += [(sender(sel.queries), f"{name}<q>", dependent[sel.queries.uid]),
                      (sender(sel.keys), f"{name}<k>", dependent[sel.keys.uid]), ("input", f"{name}<k>", False)]
            if isinstance(s, SelectorWidth):
                m = f"m{(lvl + 1) // 2}"
                reads += [("input", f"{name}<v>", False), (name, m, dependent[s.uid]), ("input", m, False)]
            else:
                reads.append((sender(s.sop), f"{name}<v>", dependent[s.sop.uid]))
        if isinstance(s, (Map, SequenceMap)):
            m = f"m{place[s.uid].level // 2}"
            reads += [(sender(c), m, dependent[c.uid]) for c in s.children] + [("input", m, False)]
    wiring = frozenset(f"{a}->{b}" for a, b, _ in reads)
    edges = frozenset(f"{a}->{b}" for a, b, dep in reads if dep)
    return wiring, edges


__all__ = ["BOS", "CompiledProgram", "compile_program"]
