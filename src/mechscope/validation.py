"""Checking config dataclasses against their own annotations, and building them from JSON-like dicts.

Configs arrive from untyped places (JSON files, the CLI, notebooks), so a wrong type must fail at once
with a ``ConfigError`` naming the field, what is allowed and what was given, never later as a torch error
or, worse, a silently different model. ``check_types(obj)`` is called from a config's ``__post_init__``;
``build(cls, data)`` turns a dict into a config, rejecting unknown keys (with close matches, so a misspelt
``n_head_kv`` is an error rather than the default) and recursing into nested config dataclasses.

Rules: ``int`` is an int and not a bool; ``float`` is a finite int or float (not a bool); ``bool`` is only
``True``/``False`` (the string ``"false"`` is not accepted); ``Literal`` lists its choices; ``X | None``
accepts None; ``tuple[...]`` accepts a tuple or a list (JSON has no tuples) with the element types checked.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from mechscope.errors import ConfigError, close_matches

T = TypeVar("T")


@functools.cache
def field_types(cls: Any) -> dict[str, Any]:
    """Resolved annotations of a dataclass's init fields (ClassVars excluded)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def describe(tp: Any) -> str:
    """A short human description of a type hint: ``a positive int``-style wording is left to callers."""
    if tp is type(None) or tp is None:
        return "None"
    if tp is Any:
        return "anything"
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if _is_union(tp):
        return " or ".join(describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe(args[0])}"
        return f"a list of {len(args)} items ({', '.join(describe(a) for a in args)})"
    if origin in (list, dict):
        return f"a {'list' if origin is list else 'dict'}"
    if tp is float:
        return "a finite number"
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            return f"a {tp.__name__} (a dict of its fields)"
        return {"int": "an int", "bool": "true or false", "str": "a string"}.get(tp.__name__, f"a {tp.__name__}")
    return str(tp)


def conforms(value: Any, tp: Any) -> bool:
    """Whether ``value`` is of type hint ``tp`` under the rules in the module docstring."""
    if tp is Any:
        return True
    if tp is type(None) or tp is None:
        return value is None
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(tp))
    if _is_union(tp):
        return any(conforms(value, a) for a in typing.get_args(tp))
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(v, args[0]) for v in value)
        return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args))
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(conforms(v, arg) for v in value)
    if origin is dict or origin is Mapping:
        return isinstance(value, Mapping)
    if origin is not None and origin.__module__ == "collections.abc" and origin.__name__ == "Callable":
        return callable(value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # a hint we cannot check (a TypeVar, a string forward reference): the caller's checks apply


def _got(value: Any) -> str:
    text = repr(value)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({type(value).__name__})"


def check_types(obj: Any, prefix: str = "") -> None:
    """Raise ``ConfigError`` naming the first field of dataclass ``obj`` whose value is not of its type."""
    for name, tp in field_types(cast(Any, type(obj))).items():
        value = getattr(obj, name)
        if not conforms(value, tp):
            raise ConfigError(f"{prefix}{name} must be {describe(tp)}, got {_got(value)}")


def _nested_class(tp: Any) -> type | None:
    """The dataclass inside ``tp`` (``X`` or ``X | None``), if any."""
    cands = typing.get_args(tp) if _is_union(tp) else (tp,)
    for c in cands:
        if isinstance(c, type) and dataclasses.is_dataclass(c):
            return c
    return None


def build(cls: type[T], data: Any, where: str = "", *, ignore: tuple[str, ...] = (),
          convert: Mapping[str, Callable[[Any], Any]] | None = None) -> T:
    """``cls(**data)`` for a JSON-like dict: unknown keys and missing required fields raise ``ConfigError``.

    Nested dataclass fields given as dicts are built recursively; lists become tuples for tuple fields.
    ``where`` prefixes messages (``"attention."``); keys in ``ignore`` are dropped silently.
    """
    label = where.rstrip(".") or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label} must be a dict of {cls.__name__} fields, got {_got(data)}")
    types_ = field_types(cast(Any, cls))
    unknown = [k for k in data if k not in types_ and k not in ignore]
    if unknown:
        k = unknown[0]
        near = close_matches(str(k), types_) if isinstance(k, str) else []
        hint = f" Did you mean {', '.join(repr(n) for n in near)}?" if near else ""
        raise ConfigError(f"unknown {cls.__name__} field {where}{k!s}.{hint} Allowed: {', '.join(sorted(types_))}")
    required = [f.name for f in dataclasses.fields(cast(Any, cls)) if f.init and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        raise ConfigError(f"{cls.__name__} is missing required field(s) {', '.join(where + m for m in missing)}")
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        if k in ignore:
            continue
        tp = types_[k]
        if convert and k in convert:
            v = convert[k](v)
        sub = _nested_class(tp)
        if sub is not None and isinstance(v, Mapping):
            v = build(sub, v, f"{where}{k}.")
        elif typing.get_origin(tp) is tuple and isinstance(v, list) or _is_union(tp) and isinstance(v, list) and any(typing.get_origin(a) is tuple for a in typing.get_args(tp)):
            v = tuple(v)
        if not conforms(v, tp):
            raise ConfigError(f"{where}{k} must be {describe(tp)}, got {_got(v)}")
        kwargs[k] = v
    return cls(**kwargs)


def positive_int(value: Any, name: str) -> int:
    """``value`` if it is an int >= 1, else a ``ConfigError`` naming ``name``."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        raise ConfigError(f"{name} must be a positive int, got {_got(value)}")
    return value


__all__ = ["build", "check_types", "conforms", "describe", "field_types", "positive_int"]
