"""The RASP programs compiled into ground-truth circuits, each with its input domain.

All are causal (a query sees its own and earlier positions): tracr's ``reverse`` and ``sort`` read later
positions, which a decoder cannot, so they are replaced by programs exercising the same parts:

| program | what it computes at index i | parts |
|---|---|---|
| ``frac_prevs`` | fraction of x[0..i] equal to 1 | categorical→numerical MLP, numerical Aggregate |
| ``hist`` | how many of x[0..i] equal x[i] | SelectorWidth (head + numerical→categorical MLP) |
| ``prev_sum`` | (x[i] + x[i-1]) mod 3 | previous-token head, SequenceMap MLP |
| ``shift2`` | x[i-2], by two previous-token hops | V-composition |
| ``pointer`` | x[x[x[i]]] with pointers x[k] <= k | two-hop lookup, Q-composition |
| ``induction`` | x[k+1] where x[k] = x[i], k < i | previous-token head → K-composition |
| ``repeat_count`` | min(count of x[i] in x[0..i], 2) via hist then a Map | SelectorWidth then a categorical MLP |
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mechscope.circuits.truth.rasp import lang as r
from mechscope.errors import ConfigError, close_matches


@dataclass(frozen=True)
class Program:
    """A RASP program and its input domain."""

    name: str
    """Registry name (``rasp:<name>``)."""
    output: r.SOp
    """The output SOp."""
    vocab: tuple[Any, ...]
    """Input values."""
    max_len: int
    """Sequence length of the domain."""
    valid: Callable[[tuple[Any, ...]], bool] | None = None
    """Which sequences of ``vocab^max_len`` belong to the domain (None: all)."""
    description: str = ""
    """One line on what it computes."""

    def domain(self) -> Iterator[tuple[Any, ...]]:
        """Every input sequence of the domain, in a fixed order."""
        for xs in itertools.product(self.vocab, repeat=self.max_len):
            if self.valid is None or self.valid(xs):
                yield xs


def _prev(x: r.SOp, idx: r.SOp, n: int, label: str) -> r.Aggregate:
    """x[i-1] (nothing at i = 0)."""
    return r.aggregate(r.Select(idx, idx, lambda k, q: k == q - 1), x, label=label, max_len=n)


def frac_prevs() -> Program:
    n, vocab = 5, (0, 1, 2)
    x, idx = r.tokens(vocab), r.indices(n)
    ones = r.map_(lambda v: 1.0 if v == 1 else 0.0, x, label="is_one", encoding="numerical")
    out = r.aggregate(r.Select(idx, idx, lambda k, q: k <= q), ones, label="frac_prevs", max_len=n)
    return Program("frac_prevs", out, vocab, n, description="fraction of the tokens so far that are 1")


def hist() -> Program:
    n, vocab = 5, (0, 1, 2)
    x = r.tokens(vocab)
    out = r.selector_width(r.Select(x, x, lambda k, q: k == q), label="hist", max_len=n)
    return Program("hist", out, vocab, n, description="how many tokens so far equal the current one")


def prev_sum() -> Program:
    n, vocab = 5, (0, 1, 2)
    x, idx = r.tokens(vocab), r.indices(n)
    out = r.sequence_map(lambda a, b: (a + b) % 3, x, _prev(x, idx, n, "prev"), label="prev_sum")
    return Program("prev_sum", out, vocab, n, description="(current + previous token) mod 3")


def shift2() -> Program:
    n, vocab = 5, (0, 1, 2)
    x, idx = r.tokens(vocab), r.indices(n)
    out = _prev(_prev(x, idx, n, "prev"), idx, n, "shift2")
    return Program("shift2", out, vocab, n, description="the token two positions back, by two one-step hops")


def pointer() -> Program:
    n = 5
    vocab = tuple(range(n))
    x, idx = r.tokens(vocab), r.indices(n)
    hop1 = r.aggregate(r.Select(idx, x, lambda k, q: k == q), x, label="hop1", max_len=n)
    out = r.aggregate(r.Select(idx, hop1, lambda k, q: k == q), x, label="pointer", max_len=n)
    return Program("pointer", out, vocab, n, valid=lambda xs: all(v <= k for k, v in enumerate(xs)),
                   description="x[x[x[i]]] for pointer sequences (x[k] <= k): a two-hop lookup")


def induction() -> Program:
    n, vocab = 6, (0, 1, 2)
    x, idx = r.tokens(vocab), r.indices(n)
    prev = _prev(x, idx, n, "prev")
    out = r.aggregate(r.Select(prev, x, lambda k, q: k == q), x, label="induction", max_len=n)
    return Program("induction", out, vocab, n,
                   description="the token after an earlier occurrence of the current token (K-composition)")


def repeat_count() -> Program:
    n, vocab = 5, (0, 1, 2)
    x = r.tokens(vocab)
    width = r.selector_width(r.Select(x, x, lambda k, q: k == q), label="count", max_len=n)
    out = r.map_(lambda c: min(c, 2), width, label="repeat_count")
    return Program("repeat_count", out, vocab, n, description="min(2, occurrences of the current token so far)")


PROGRAMS: dict[str, Callable[[], Program]] = {
    "frac_prevs": frac_prevs, "hist": hist, "prev_sum": prev_sum, "shift2": shift2, "pointer": pointer,
    "induction": induction, "repeat_count": repeat_count,
}
"""Program name -> builder."""


def get_program(name: str) -> Program:
    """The program called ``name`` (a clear error with close matches otherwise)."""
    if name not in PROGRAMS:
        near = close_matches(name, PROGRAMS)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        raise ConfigError(f"unknown RASP program {name!r}.{hint} Known: {', '.join(sorted(PROGRAMS))}")
    return PROGRAMS[name]()


__all__ = ["PROGRAMS", "Program", "get_program"]
