"""Hypothesis strategies and the shared property: every failure is a ``MechscopeError`` saying something.

All property tests use ``FAST`` settings: few examples, ``derandomize=True`` (the same examples every run,
so CI is deterministic) and no example database, so the whole suite runs in well under a minute.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from mechscope.errors import MechscopeError


def fast(n: int) -> settings:
    """Settings for a property test: ``n`` examples (times ``$MECHSCOPE_PROPERTY_SCALE`` for a deeper local
    hunt), derandomised, no deadline, no database."""
    return settings(max_examples=n * int(os.environ.get("MECHSCOPE_PROPERTY_SCALE", "1")), derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.sampled_from([0, 1, -1, 2, 3, 7, 10**9]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["false", "true", "1", "", "gelu", "rotary", "rmsnorm", "gated", "none", "1e-5"]),
)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                  st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=6)


def paths(d: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of a nested dict (dict values included as paths themselves)."""
    out = []
    for k, v in d.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out += paths(v, (*prefix, k))
    return out


@st.composite
def mutated(draw: Any, base: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of ``base`` with one to three edits (replace a value, delete a key, add a key); returns the
    dict and the names of the keys touched."""
    d = copy.deepcopy(base)
    touched: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        ps = paths(d)
        if not ps:
            break
        path = draw(st.sampled_from(ps))
        parent = d
        for k in path[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
            touched.append(path[-1])
        elif action == "delete":
            del parent[path[-1]]
            touched.append(path[-1])
        else:
            key = draw(st.one_of(st.text(min_size=1, max_size=10), st.sampled_from(
                [path[-1] + "s", path[-1][:-1], path[-1].replace("_", ""), "n_head_kv", "d_modle"])))
            if key in parent:
                continue
            parent[key] = draw(JSON_VALUES)
            touched.append(key)
    return d, touched


def call(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    """``(result, None)`` or ``(None, message)`` when ``fn`` raised a ``MechscopeError``; anything else
    propagates (and fails the property)."""
    try:
        return fn(), None
    except MechscopeError as e:
        msg = str(e)
        assert len(msg) >= 15, f"unhelpful message: {msg!r}"
        return None, msg
