"""``HookedModule``: a root module that names its hook points and scopes every hook to a ``with`` block.

Hooks are global state on the model: a hook left attached silently changes every later forward pass
(TransformerLens issue #1323). So mechscope never hands out a bare ``add_hook``; every hook is attached
inside ``model.hooks(...)`` and removed when the block exits, exceptions included. Nesting is allowed:
an inner block's hooks run after the outer block's on the same point and are removed first.

``run_with_cache`` is a ``hooks`` block whose hooks store tensors in a dict; only the requested names
are stored, and only requested names get hooks at all, so nothing else is materialised.

TransformerLens habits work too: ``run_with_hooks(fwd_hooks=[...], bwd_hooks=[...])``, and
``add_hook`` / ``reset_hooks`` (see ``hooks/handles.py``: scoped inside a ``with`` block, and a leak
warning when a forgotten top-level hook runs on a second forward pass).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, Union

import torch
from torch import Tensor, nn

from mechscope.errors import ConfigError, HookNameError, ShapeError, unknown_hook
from mechscope.hooks.handles import Direction, HookHandle, leak_check
from mechscope.hooks.point import HookFn, HookPoint

NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]
HookSpec = Sequence[tuple[Union[str, Callable[[str], bool]], HookFn]]

_LIVE: weakref.WeakSet[HookedModule] = weakref.WeakSet()


def live_hook_leaks() -> list[str]:
    """Names of hook points on any live ``HookedModule`` that still have hooks (used by the test fixture)."""
    return [n for m in list(_LIVE) for n, hp in m.hook_dict.items() if hp.has_hooks]


class HookedModule(nn.Module):
    """Root of a hooked model: call ``setup()`` at the end of ``__init__`` to name the hook points."""

    hook_dict: dict[str, HookPoint]

    def setup(self) -> None:
        """Name every ``HookPoint`` by its module path and index them in ``hook_dict``."""
        self.hook_dict = {}
        for name, mod in self.named_modules():
            if isinstance(mod, HookPoint):
                mod.name = name
                self.hook_dict[name] = mod
        _LIVE.add(self)

    # -- name resolution --------------------------------------------------------------------------
    def hook_names(self, names: NamesFilter = None) -> list[str]:
        """Resolve a names filter (None = all, a name, a list, or a predicate) to known hook names.

        Unknown names raise ``HookNameError`` with close matches; ``<name>_grad`` is not a hook name.
        """
        if names is None:
            return list(self.hook_dict)
        if isinstance(names, str):
            names = [names]
        if callable(names):
            pred = names
            return [n for n in self.hook_dict if pred(n)]
        out = []
        for n in names:
            if n not in self.hook_dict:
                raise unknown_hook(n, self.hook_dict)
            out.append(n)
        return out

    def _resolve_spec(self, spec: HookSpec | None) -> list[tuple[HookPoint, HookFn]]:
        pairs: list[tuple[HookPoint, HookFn]] = []
        for target, fn in spec or ():
            for n in self.hook_names(target):
                pairs.append((self.hook_dict[n], fn))
        return pairs

    # -- mounted hook points ----------------------------------------------------------------------
    @contextlib.contextmanager
    def mount_hook_points(self, prefix: str, points: Mapping[str, HookPoint]) -> Iterator[HookedModule]:
        """Expose extra hook points as ``<prefix>.<local name>`` in ``hook_dict`` for a ``with`` block.

        Used by ``dictionaries.splice``: a dictionary run inside the model at ``H`` shows its points as
        ``H.hook_sae_acts_post`` etc., usable by ``hooks``/``run_with_cache`` like any other. The points
        are renamed while mounted and get their old names back on exit; names already in use raise
        ``HookNameError``. Hooks on the mounted points must be attached (and removed) inside the block.
        """
        full = {f"{prefix}.{local}": hp for local, hp in points.items()}
        taken = sorted(n for n in full if n in self.hook_dict)
        if taken:
            raise HookNameError(f"cannot mount hook points {taken}: the names are already in use "
                                f"(is something already spliced at {prefix!r}?)")
        old_names = {n: hp.name for n, hp in full.items()}
        try:
            for n, hp in full.items():
                hp.name = n
                self.hook_dict[n] = hp
            yield self
        finally:
            for n, hp in full.items():
                if self.hook_dict.get(n) is hp:
                    del self.hook_dict[n]
                hp.name = old_names[n]

    # -- scoped hooks -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def hooks(self, fwd: HookSpec | None = None, bwd: HookSpec | None = None, *,
              fwd_hooks: HookSpec | None = None, bwd_hooks: HookSpec | None = None) -> Iterator[HookedModule]:
        """Attach forward/backward hooks for the duration of a ``with`` block.

        ``fwd``/``bwd`` (TransformerLens spells them ``fwd_hooks``/``bwd_hooks``; both are accepted) are
        lists of ``(name_or_predicate, fn)``; ``fn(tensor, hook)`` returns a replacement tensor or ``None``.
        All are removed on exit, even when the block raises, and so are non-permanent hooks that
        ``add_hook`` attached inside the block.

        Example:
            >>> with model.hooks(fwd=[("blocks.0.hook_resid_post", lambda x, hook: x * 0)]):  # doctest: +SKIP
            ...     logits = model(tokens)
        """
        fwd = _alias(fwd, fwd_hooks, "fwd", "fwd_hooks")
        bwd = _alias(bwd, bwd_hooks, "bwd", "bwd_hooks")
        fwd_pairs = self._resolve_spec(fwd)
        bwd_pairs = self._resolve_spec(bwd)
        scope: list[HookHandle] = []
        self._scopes().append(scope)
        try:
            for hp, fn in fwd_pairs:
                hp.fwd_fns.append(fn)
            for hp, fn in bwd_pairs:
                hp.bwd_fns.append(fn)
            yield self
        finally:
            for h in reversed(scope):
                h.remove()
            scopes = self._scopes()
            del scopes[next(i for i in range(len(scopes) - 1, -1, -1) if scopes[i] is scope)]
            for hp, fn in reversed(fwd_pairs):
                _remove_last(hp.fwd_fns, fn)
            for hp, fn in reversed(bwd_pairs):
                _remove_last(hp.bwd_fns, fn)

    def run_with_hooks(self, *args: Any, fwd: HookSpec | None = None, bwd: HookSpec | None = None,
                       fwd_hooks: HookSpec | None = None, bwd_hooks: HookSpec | None = None,
                       reset_hooks_end: bool = True, **kwargs: Any) -> Any:
        """Run ``self(*args, **kwargs)`` with the given hooks attached for this call only.

        ``fwd_hooks``/``bwd_hooks`` are TransformerLens's names for ``fwd``/``bwd``. ``reset_hooks_end=False``
        (leave the hooks attached afterwards) is refused: use ``add_hook`` for hooks that should stay.
        """
        if reset_hooks_end is not True:
            raise ConfigError("run_with_hooks(reset_hooks_end=False) would leave hooks attached to the model; "
                              "use model.add_hook(...) for hooks that should stay, or model.hooks(...) as a block")
        with self.hooks(fwd=fwd, bwd=bwd, fwd_hooks=fwd_hooks, bwd_hooks=bwd_hooks):
            return self(*args, **kwargs)

    # -- TransformerLens's add_hook / reset_hooks --------------------------------------------------
    def _scopes(self) -> list[list[HookHandle]]:
        return self.__dict__.setdefault("_hook_scopes", [])

    def _handles(self) -> list[HookHandle]:
        handles = self.__dict__.get("_added_handles")
        if handles is None:
            handles = self.__dict__["_added_handles"] = []
            self.register_forward_pre_hook(leak_check(handles))
        return handles

    def add_hook(self, name: str | Callable[[str], bool], hook: HookFn, dir: Direction = "fwd",
                 is_permanent: bool = False) -> HookHandle:
        """Attach ``hook`` to the point(s) ``name`` (a name or a predicate) and return its handle.

        Inside a ``model.hooks(...)`` block a non-permanent hook is removed with the block; ``with
        model.add_hook(...):`` scopes it on its own; otherwise it stays until ``reset_hooks()`` or
        ``handle.remove()``, and warns (``HookLeakWarning``) if still attached on a second forward pass.
        """
        if dir not in ("fwd", "bwd"):
            raise ConfigError(f"add_hook dir must be 'fwd' or 'bwd', got {dir!r}")
        if not callable(hook):
            raise ConfigError(f"add_hook needs a function fn(tensor, hook), got {type(hook).__name__}")
        names = self.hook_names(name)
        if not names:
            raise HookNameError(f"add_hook: the predicate matched no hook point of this model ({len(self.hook_dict)} "
                                "points; list them with model.hook_dict)")
        handle = HookHandle([self.hook_dict[n] for n in names], hook, dir, is_permanent).attach()
        scopes = self._scopes()
        if scopes and not is_permanent:
            scopes[-1].append(handle)
        else:
            self._handles().append(handle)
        return handle

    def reset_hooks(self, including_permanent: bool = False, direction: Literal["fwd", "bwd", "both"] = "both"
                    ) -> None:
        """Remove the hooks ``add_hook`` attached outside any block (permanent ones only when asked).

        Hooks of active ``model.hooks(...)`` blocks are theirs to remove, on exit.
        """
        handles = self._handles()
        for h in list(handles):
            if (h.permanent and not including_permanent) or direction not in ("both", h.direction):
                continue
            h.remove()
            handles.remove(h)

    def run_with_cache(self, *args: Any, names: NamesFilter = None,
                       grad_of: Callable[[Tensor], Tensor] | None = None,
                       names_filter: NamesFilter = None, max_bytes: int | float | str | None = None,
                       **kwargs: Any) -> tuple[Tensor, ActivationCacheT]:
        """Run forward and return ``(output, cache)`` holding only the requested hook names.

        Args:
            names: None (every hook point), one name, a list of names, or a predicate on names.
            grad_of: if given, ``grad_of(output)`` must return a scalar; it is back-propagated and the
                cache also holds ``<name>_grad`` for every requested name. Parameters' ``.grad`` are left
                as they were (nothing is accumulated on the model).
            names_filter: TransformerLens's name for ``names`` (accepted so its users' code runs as is).
            max_bytes: memory budget of the cache (bytes, ``"8GB"``, ``"40%"``, ``"off"``); default
                ``MECHSCOPE_MEMORY_BUDGET`` or half the available RAM. The cache size is estimated from the
                registered hook shapes first; beyond the budget ``MemoryBudgetError`` says what fits.
        """
        from mechscope.cache.activation_cache import ActivationCache
        from mechscope.cache.budget import check_cache

        if names_filter is not None:
            if names is not None:
                raise ConfigError("run_with_cache: give names= or names_filter= (its TransformerLens alias), not both")
            names = names_filter
        wanted = self.hook_names(names)
        store: dict[str, Tensor] = {}
        keep_graph = grad_of is not None
        past = kwargs.get("past_kv")
        check_cache(self, wanted, args[0] if args else kwargs.get("tokens"), max_bytes=max_bytes,
                    stop_at_layer=kwargs.get("stop_at_layer"), with_grad=keep_graph,
                    past=int(getattr(past, "length", 0) or 0))

        def save(x: Tensor, hook: HookPoint) -> None:
            store[hook.name] = x if not keep_graph else x.detach()

        def save_grad(g: Tensor, hook: HookPoint) -> None:
            store[hook.name + "_grad"] = g.detach()

        fwd = [(n, save) for n in wanted]
        bwd = [(n, save_grad) for n in wanted] if keep_graph else None
        ctx = contextlib.nullcontext() if keep_graph else torch.no_grad()
        with ctx, self.hooks(fwd=fwd, bwd=bwd):
            out = self(*args, **kwargs)
            if grad_of is not None:
                metric = _scalar_metric(grad_of(out))
                params = [p for p in self.parameters() if p.requires_grad]
                before = [p.grad for p in params]
                for p in params:  # detach the existing .grad so backward cannot accumulate into it
                    p.grad = None
                try:
                    metric.backward()
                finally:  # the cache wants activation gradients; the model's .grad stay untouched
                    for p, g in zip(params, before):
                        p.grad = g
        return out, ActivationCache(store, model=self)


def _scalar_metric(metric: object) -> Tensor:
    """``grad_of``'s result if it is a one-element tensor with a gradient, else a clear error."""
    if not isinstance(metric, Tensor):
        raise ConfigError(f"run_with_cache: grad_of must return a scalar tensor computed from the output, got "
                          f"{type(metric).__name__}; e.g. grad_of=lambda logits: logits[:, -1, token].sum()")
    if metric.numel() != 1:
        raise ShapeError(f"run_with_cache: grad_of must return a scalar (one element), got shape "
                         f"{tuple(metric.shape)}; reduce it first, e.g. with .sum() or .mean()")
    if not metric.requires_grad:
        raise ConfigError("run_with_cache: grad_of returned a tensor that does not depend on the output "
                          "(no gradient flows back): compute it from the output it receives, with the model's parameters "
                          "trainable and outside torch.no_grad()/inference_mode()")
    return metric


ActivationCacheT = Any  # forward reference for type checkers without an import cycle


def _alias(ours: HookSpec | None, theirs: HookSpec | None, name: str, tl_name: str) -> HookSpec | None:
    if ours is not None and theirs is not None:
        raise ConfigError(f"give {name}= or {tl_name}= (its TransformerLens name), not both")
    return ours if ours is not None else theirs


def _remove_last(lst: list[HookFn], fn: HookFn) -> None:
    for i in range(len(lst) - 1, -1, -1):
        if lst[i] is fn:
            del lst[i]
            return
