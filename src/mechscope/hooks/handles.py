"""``add_hook`` handles: TransformerLens's ``model.add_hook`` / ``model.reset_hooks`` habit, made safe.

A ``HookHandle`` is what ``model.add_hook(name, fn)`` returns. It is a context manager, so
``with model.add_hook(...):`` scopes the hook like ``model.hooks(...)``. A non-permanent hook added inside
an active ``model.hooks(...)`` / ``run_with_hooks`` block is scoped to that block. A bare top-level call
keeps TransformerLens's meaning (attached until ``handle.remove()`` or ``model.reset_hooks()``), with a
leak check: the *second* forward pass that still runs a forgotten non-permanent hook warns with
``HookLeakWarning`` naming it (``add_hook`` → forward → ``reset_hooks`` never warns).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from mechscope.hooks.point import HookFn, HookPoint

Direction = Literal["fwd", "bwd"]


class HookLeakWarning(UserWarning):
    """A hook attached with ``add_hook`` is still running on a later forward pass."""


class HookHandle:
    """One function attached by ``add_hook`` to one or more hook points; ``remove()`` detaches it."""

    def __init__(self, points: list[HookPoint], fn: HookFn, direction: Direction, permanent: bool) -> None:
        self.points = points
        self.fn = fn
        self.direction = direction
        self.permanent = permanent
        self.forwards_seen = 0
        self.attached = False

    def _lists(self) -> list[list[HookFn]]:
        return [p.fwd_fns if self.direction == "fwd" else p.bwd_fns for p in self.points]

    def attach(self) -> HookHandle:
        """Append the function to every point's list (it runs after the hooks already there)."""
        for lst in self._lists():
            lst.append(self.fn)
        self.attached = True
        return self

    def remove(self) -> None:
        """Detach the function (idempotent)."""
        if not self.attached:
            return
        for lst in self._lists():
            for i in range(len(lst) - 1, -1, -1):
                if lst[i] is self.fn:
                    del lst[i]
                    break
        self.attached = False

    def names(self) -> list[str]:
        """Names of the hook points this handle is attached to."""
        return [p.name for p in self.points]

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "attached" if self.attached else "removed"
        return f"HookHandle({self.direction}, {self.names()[:3]}{'...' if len(self.points) > 3 else ''}, {state})"


def leak_check(handles: list[HookHandle]) -> Any:
    """A torch forward pre-hook that warns when a forgotten top-level handle runs on a second forward."""

    def pre_hook(module: Any, args: Any) -> None:
        for h in handles:
            if not h.attached or h.permanent:
                continue
            h.forwards_seen += 1
            if h.forwards_seen == 2:
                warnings.warn(
                    f"a hook added with model.add_hook on {h.names()[:3]} is still attached and has now run on "
                    "2 forward passes; call model.reset_hooks() (or handle.remove()) when done, use "
                    "`with model.add_hook(...):` / model.hooks(...) to scope it, or pass is_permanent=True",
                    HookLeakWarning, stacklevel=3)

    return pre_hook


__all__ = ["HookHandle", "HookLeakWarning", "leak_check"]
