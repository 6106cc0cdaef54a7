"""A small RASP (Weiss et al. 2021) in the spirit of tracr: sequence operations (SOps) and selectors.

Primitives ``tokens`` and ``indices``; ``Map`` / ``SequenceMap`` (element-wise, compiled to MLPs);
``Select(keys, queries, predicate)`` with ``Aggregate`` (mean of the selected values, compiled to one
attention head) and ``SelectorWidth`` (how many keys are selected: a head plus an MLP). Every SOp is
``categorical`` (one-hot in the residual stream, one dimension per value) or ``numerical`` (one dimension).

Unlike tracr, attention is causal (a ``HookedTransformer`` is a decoder): a query sees keys at its own and
earlier positions only, so programs are written over prefixes. Value sets are finite and computed at
construction from the input vocabulary and the maximum length: the compiler needs them to lay out the
residual stream and to build lookup-table MLPs.

``evaluate(sop, xs)`` is the reference interpreter the compiled model is tested against. A categorical
aggregate whose selected keys hold different values is undefined in RASP (tracr requires at most one
selected key); the interpreter returns ``UNDEFINED`` there and tests skip those positions.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mechscope.errors import ConfigError

Encoding = Literal["categorical", "numerical"]
Value = Any


class _Undefined:
    """The value of a categorical aggregate over disagreeing keys (see module docstring)."""

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Any = _Undefined()

_ids = itertools.count()


@dataclass(frozen=True, eq=False, kw_only=True)
class SOp:
    """A sequence operation: one value per position. Identity-hashed (a node of the program graph)."""

    label: str
    """Name used in layouts and error messages."""
    encoding: Encoding
    """``categorical`` (one-hot) or ``numerical`` (a scalar)."""
    values: tuple[Value, ...]
    """Every value this SOp can take (sorted; numerical ones are floats)."""
    uid: int = field(default_factory=lambda: next(_ids))
    """Creation order (a stable tiebreak for layouts)."""

    @property
    def children(self) -> tuple[SOp, ...]:
        """The SOps this one reads."""
        return ()


@dataclass(frozen=True, eq=False, kw_only=True)
class Tokens(SOp):
    """The input tokens (categorical over the vocabulary)."""


@dataclass(frozen=True, eq=False, kw_only=True)
class Indices(SOp):
    """Positions 0..n-1 of the sequence (categorical)."""


@dataclass(frozen=True, eq=False, kw_only=True)
class Map(SOp):
    """``fn(inner[i])`` at every position."""

    fn: Callable[[Any], Any]
    """The element-wise function."""
    inner: SOp
    """Its argument."""

    @property
    def children(self) -> tuple[SOp, ...]:
        return (self.inner,)


@dataclass(frozen=True, eq=False, kw_only=True)
class SequenceMap(SOp):
    """``fn(a[i], b[i])`` at every position (both arguments categorical)."""

    fn: Callable[[Any, Any], Any]
    """The element-wise function of two arguments."""
    a: SOp
    """First argument."""
    b: SOp
    """Second argument."""

    @property
    def children(self) -> tuple[SOp, ...]:
        return (self.a, self.b)


@dataclass(frozen=True, eq=False)
class Select:
    """Selection matrix ``predicate(keys[k], queries[q])`` for ``k <= q`` (causal); keys/queries categorical."""

    keys: SOp
    """Read at key positions."""
    queries: SOp
    """Read at the query position."""
    predicate: Callable[[Any, Any], bool]
    """``predicate(key_value, query_value)``."""

    def __post_init__(self) -> None:
        for role, s in (("keys", self.keys), ("queries", self.queries)):
            if s.encoding != "categorical":
                raise ConfigError(f"Select {role} must be categorical SOps, got numerical {s.label!r}")


@dataclass(frozen=True, eq=False, kw_only=True)
class Aggregate(SOp):
    """Mean of ``sop`` over the keys ``selector`` selects; default (nothing selected) is 0 / no value."""

    selector: Select
    """Which keys each query reads."""
    sop: SOp
    """The values averaged."""

    @property
    def children(self) -> tuple[SOp, ...]:
        return (self.selector.queries, self.selector.keys, self.sop)


@dataclass(frozen=True, eq=False, kw_only=True)
class SelectorWidth(SOp):
    """How many keys ``selector`` selects at each query (categorical 0..max_len)."""

    selector: Select
    """The selector counted."""

    @property
    def children(self) -> tuple[SOp, ...]:
        return (self.selector.queries, self.selector.keys)


def _sorted(values: Sequence[Value] | set[Value]) -> tuple[Value, ...]:
    return tuple(sorted(set(values), key=lambda v: (str(type(v)), v)))


def tokens(vocab: Sequence[Value]) -> Tokens:
    """The input SOp over ``vocab``."""
    if not vocab:
        raise ConfigError("a RASP vocabulary needs at least one value")
    return Tokens(label="tokens", encoding="categorical", values=_sorted(vocab))


def indices(max_len: int) -> Indices:
    """Positions of sequences up to ``max_len`` long."""
    if max_len < 1:
        raise ConfigError(f"max_len must be >= 1, got {max_len}")
    return Indices(label="indices", encoding="categorical", values=tuple(range(max_len)))


def map_(fn: Callable[[Any], Any], inner: SOp, *, label: str, encoding: Encoding = "categorical") -> Map:
    """``Map``; its value set is ``fn`` of every input value."""
    vals = {fn(v) for v in inner.values}
    if encoding == "numerical":
        vals = {float(v) for v in vals}
    return Map(label=label, encoding=encoding, values=_sorted(vals), fn=fn, inner=inner)


def sequence_map(fn: Callable[[Any, Any], Any], a: SOp, b: SOp, *, label: str) -> SequenceMap:
    """Categorical ``SequenceMap`` of two categorical SOps."""
    if a.encoding != "categorical" or b.encoding != "categorical":
        raise ConfigError(f"SequenceMap {label!r} needs categorical arguments")
    return SequenceMap(label=label, encoding="categorical", values=_sorted({fn(x, y) for x in a.values for y in b.values}),
                       fn=fn, a=a, b=b)


def aggregate(selector: Select, sop: SOp, *, label: str, max_len: int) -> Aggregate:
    """``Aggregate`` keeping ``sop``'s encoding; a numerical one can take any mean of up to ``max_len`` values."""
    if sop.encoding == "categorical":
        return Aggregate(label=label, encoding="categorical", values=sop.values, selector=selector, sop=sop)
    means = {0.0}
    for m in range(1, max_len + 1):
        for combo in itertools.combinations_with_replacement(sop.values, m):
            means.add(round(sum(float(c) for c in combo) / m, 9))
    return Aggregate(label=label, encoding="numerical", values=_sorted(means), selector=selector, sop=sop)


def selector_width(selector: Select, *, label: str, max_len: int) -> SelectorWidth:
    """``SelectorWidth`` (values 0..max_len)."""
    return SelectorWidth(label=label, encoding="categorical", values=tuple(range(max_len + 1)), selector=selector)


def evaluate(sop: SOp, xs: Sequence[Value]) -> list[Any]:
    """Reference semantics of ``sop`` on one input sequence ``xs`` (causal; see module docstring)."""
    memo: dict[int, list[Any]] = {}

    def ev(s: SOp) -> list[Any]:
        if s.uid in memo:
            return memo[s.uid]
        out: list[Any]
        if isinstance(s, Tokens):
            out = list(xs)
        elif isinstance(s, Indices):
            out = list(range(len(xs)))
        elif isinstance(s, Map):
            out = [_lift(s.fn, v) for v in ev(s.inner)]
        elif isinstance(s, SequenceMap):
            out = [_lift(s.fn, a, b) for a, b in zip(ev(s.a), ev(s.b))]
        elif isinstance(s, Aggregate):
            out = _aggregate(_select(s.selector, ev), ev(s.sop), s.encoding)
        elif isinstance(s, SelectorWidth):
            out = [UNDEFINED if row is None else sum(row) for row in _select(s.selector, ev)]
        else:
            raise ConfigError(f"unknown SOp type {type(s).__name__}")
        memo[s.uid] = out
        return out

    return ev(sop)


def _lift(fn: Callable[..., Any], *args: Any) -> Any:
    if any(a is UNDEFINED for a in args):
        return UNDEFINED
    if any(a is None for a in args):
        return None
    return fn(*args)


def _select(sel: Select, ev: Callable[[SOp], list[Any]]) -> list[list[bool] | None]:
    """Per query, the selected keys ``k <= q`` (None where a key or query value is undefined)."""
    keys, queries = ev(sel.keys), ev(sel.queries)
    rows: list[list[bool] | None] = []
    for q, qv in enumerate(queries):
        if qv is UNDEFINED or any(k is UNDEFINED for k in keys[:q + 1]):
            rows.append(None)
            continue
        rows.append([qv is not None and kv is not None and bool(sel.predicate(kv, qv)) for kv in keys[:q + 1]])
    return rows


def _aggregate(rows: list[list[bool] | None], vals: list[Any], encoding: Encoding) -> list[Any]:
    out: list[Any] = []
    for row in rows:
        if row is None:
            out.append(UNDEFINED)
            continue
        chosen = [vals[k] for k, on in enumerate(row) if on]
        if encoding == "numerical":
            ok = all(v is not UNDEFINED for v in chosen)
            out.append(sum(float(v or 0.0) for v in chosen) / len(chosen) if ok and chosen else (0.0 if ok else UNDEFINED))
        elif any(v is UNDEFINED for v in chosen):
            out.append(UNDEFINED)
        elif all(v is None for v in chosen):
            out.append(None)  # nothing selected, or only keys without a value: the zero vector
        elif None not in chosen and len(set(chosen)) == 1:
            out.append(chosen[0])
        else:
            out.append(UNDEFINED)  # a mean of different one-hots (or of a one-hot and zero)
    return out


def topological(sop: SOp) -> list[SOp]:
    """Every SOp ``sop`` depends on (itself included), dependencies first."""
    order: list[SOp] = []
    seen: set[int] = set()

    def visit(s: SOp) -> None:
        if s.uid in seen:
            return
        seen.add(s.uid)
        for c in s.children:
            visit(c)
        order.append(s)

    visit(sop)
    return order


__all__ = ["UNDEFINED", "Aggregate", "Indices", "Map", "SOp", "Select", "SelectorWidth", "SequenceMap", "Tokens",
           "aggregate", "evaluate", "indices", "map_", "selector_width", "sequence_map", "tokens", "topological"]
