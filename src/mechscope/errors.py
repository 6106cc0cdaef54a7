"""Error classes. Every message names what was wrong and what is allowed, so a user can fix it at once."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MechscopeError(Exception):
    """Base class of every error mechscope raises on bad input or bad files."""


class HookNameError(MechscopeError, KeyError):
    """An unknown hook name; the message lists the closest registered names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ShapeError(MechscopeError, ValueError):
    """A tensor had the wrong shape; the message gives expected and got."""


class ConfigError(MechscopeError, ValueError):
    """An inconsistent or invalid configuration value."""


class TokenError(MechscopeError, ValueError):
    """Token ids out of range, sequences too long, or text that is not a single token when one is required."""


class ModelFileError(MechscopeError, OSError):
    """A missing, truncated or corrupted model / checkpoint / dictionary file."""


class ModelNotInstalledError(MechscopeError, ImportError):
    """A named model whose package is not installed; the message gives the install command."""


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """The candidates most similar to ``name`` (for "did you mean" messages)."""
    cands = list(candidates)
    found = difflib.get_close_matches(name, cands, n=n, cutoff=0.5)
    if not found:
        tail = name.rsplit(".", 1)[-1]
        found = [c for c in cands if c.endswith(tail)][:n]
    return found


def unknown_hook(name: str, candidates: Iterable[str]) -> HookNameError:
    """Build the error for an unknown hook name, with close matches."""
    cands = list(candidates)
    near = close_matches(name, cands)
    hint = f" Did you mean: {', '.join(near)}?" if near else ""
    return HookNameError(
        f"Unknown hook name {name!r}.{hint} This model has {len(cands)} hook points; "
        f"list them with `model.hook_dict` or `mechscope info MODEL`."
    )


def shape_error(what: str, expected: object, got: Iterable[int] | str) -> ShapeError:
    """Build a shape error naming the tensor, the expected and the actual shape."""
    return ShapeError(f"{what}: expected shape {expected}, got {got if isinstance(got, str) else tuple(got)}")


class LockedError(MechscopeError, OSError):
    """A directory is being written by another process (or another writer in this one); names the holder."""


class MemoryBudgetError(MechscopeError, MemoryError):
    """An operation would hold more memory than its budget; the message says what would fit."""


class UntrustedCodeError(MechscopeError, PermissionError):
    """A model directory asks to run its own Python code (``auto_map``); mechscope never does."""


class FeatureDBError(MechscopeError, RuntimeError):
    """A feature database that cannot be used: unknown schema version, not a mechscope database, unreachable."""


class ExplainerError(MechscopeError, RuntimeError):
    """An explainer language model that cannot be reached or answered with something unusable."""
