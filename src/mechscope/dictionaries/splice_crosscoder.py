"""Splicing an acausal crosscoder: collect every layer's input first, then write every layer.

An acausal crosscoder over hooks ``H_1..H_n`` encodes all ``n`` activations jointly, so the output it
writes at ``H_1`` depends on the input at ``H_n``, which the forward pass reaches only later (and which
depends on what was written at ``H_1``). A single forward pass cannot do this. The splice therefore runs
**two passes per model call**, both triggered by the one ``model(tokens, ...)`` the user makes:

1. **Collection** (a torch forward pre-hook on the model, scoped to the ``with`` block): the model is run
   on the same arguments with only the hooks that were attached *before* the splice (outer
   interventions still apply; hooks attached inside the ``with`` are suspended), and the activations at
   ``H_1..H_n`` are recorded. When every ``H_l`` is a ``blocks.L.*`` hook and the model's ``forward``
   takes ``stop_at_layer``, this pass stops after the last of those blocks. The crosscoder then runs once
   on the stacked inputs ``[batch pos n_layers d_in]`` (its hook points ``hook_sae_acts_post`` etc. fire
   here, so edits of the latents apply to every layer's output).
2. **Writing**: the real forward pass proceeds; at each ``H_l`` the activation is replaced by layer
   ``l`` of the reconstruction (+ the error term ``x_l - recons_clean_l`` of the clean inputs when
   ``use_error_term=True``: then with no edits every ``H_l`` gets exactly its clean activation and the
   logits are bit-for-bit the clean ones).

This is the replacement the crosscoder was trained for (it reconstructs clean activations from clean
activations); downstream computation between the hooks sees the reconstructions. Costs: one extra
(truncated) forward per call. Not supported: a KV cache (``past_kv``; the collection pass would extend the
cache twice) and calling ``model.run_blocks`` directly (no model call, so nothing is collected) — both
raise ``ConfigError``. Hooks attached outside the splice run in both passes.

Mounted points: ``H_1.hook_sae_input|acts_pre|acts_post|recons`` (shared, ``[... n_layers d_in]`` for
input and recons) and, under every ``H_l``, ``H_l.hook_sae_output`` (and ``H_l.hook_sae_error``).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from mechscope.dictionaries.base import Dictionary
from mechscope.dictionaries.splice_core import INTERNAL, Splice, SpliceSites, combine, flatten, reconstruct
from mechscope.errors import ConfigError, ShapeError
from mechscope.hooks.point import HookPoint


class _State:
    """Per-call state shared by the pre-hook (collection) and the writing hooks."""

    def __init__(self) -> None:
        self.collecting = False
        self.inputs: dict[str, Tensor] = {}
        self.result: tuple[Tensor, Tensor | None, Tensor] | None = None
        """``(recons, recons_clean, x)``, each ``[... n_layers d_in]``, for the current call."""

    def reset(self) -> None:
        self.inputs.clear()
        self.result = None


@contextlib.contextmanager
def outer_hooks_only(model: Any, snapshot: dict[HookPoint, tuple[int, int]]) -> Iterator[None]:
    """Keep on each hook point only the hooks it had when ``snapshot`` was taken (scoped hooks are LIFO)."""
    saved = {hp: (hp.fwd_fns, hp.bwd_fns) for hp in model.hook_dict.values()}
    try:
        for hp in saved:
            n_fwd, n_bwd = snapshot.get(hp, (0, 0))
            hp.fwd_fns, hp.bwd_fns = hp.fwd_fns[:n_fwd], hp.bwd_fns[:n_bwd]
        yield
    finally:
        for hp, (fwd, bwd) in saved.items():
            hp.fwd_fns, hp.bwd_fns = fwd, bwd


def collection_stop(model: Any, hooks: tuple[str, ...]) -> int | None:
    """The ``stop_at_layer`` that still runs every hook in ``hooks`` (None: run the whole model)."""
    layers = [h.split(".")[1] for h in hooks if h.startswith("blocks.")]
    if len(layers) != len(hooks) or not all(x.isdigit() for x in layers):
        return None
    try:
        accepts = "stop_at_layer" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        accepts = False
    return max(int(x) for x in layers) + 1 if accepts else None


def _collect_kwargs(kwargs: dict[str, Any], stop: int | None) -> dict[str, Any]:
    if kwargs.get("past_kv") is not None:
        raise ConfigError("a spliced crosscoder runs the model twice per call (collect all layers' inputs, then "
                          "write); generation with a KV cache (past_kv) is not supported: run without past_kv")
    if stop is None:
        return kwargs
    user = kwargs.get("stop_at_layer")
    return {**kwargs, "stop_at_layer": stop if user is None else min(user, stop)}


@contextlib.contextmanager
def splice_crosscoder(model: Any, d: Dictionary, sites: SpliceSites, use_error_term: bool) -> Iterator[Splice]:
    """Splice crosscoder ``d`` over ``sites.reads`` (checked by ``splice_sites``); see the module docstring."""
    hooks = sites.reads
    index = {h: i for i, h in enumerate(hooks)}
    d_in = d.cfg.d_in
    errors = {h: HookPoint() for h in hooks} if use_error_term else {}
    outputs = {h: HookPoint() for h in hooks}
    snapshot = {hp: (len(hp.fwd_fns), len(hp.bwd_fns)) for hp in model.hook_dict.values()}
    stop = collection_stop(model, hooks)
    state = _State()

    def collect(x: Tensor, hp: HookPoint) -> None:
        state.inputs[hp.name] = x

    def pre(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if state.collecting:  # the collection pass's own model call
            return
        state.reset()
        state.collecting = True
        try:
            with outer_hooks_only(model, snapshot), model.hooks(fwd=[(h, collect) for h in hooks]):
                model(*args, **_collect_kwargs(kwargs, stop))
        finally:
            state.collecting = False
        missing = [h for h in hooks if h not in state.inputs]
        if missing:
            raise ConfigError(f"crosscoder splice: the collection pass never reached {missing} (stop_at_layer "
                              f"{kwargs.get('stop_at_layer')!r}?); the crosscoder needs all of {list(hooks)}")
        x = torch.stack([flatten(state.inputs[h], d_in) for h in hooks], dim=-2)
        state.inputs.clear()
        recons, clean = reconstruct(d, x, use_error_term)
        state.result = (recons, clean, x)

    def post(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        if not state.collecting:
            state.reset()  # release this call's tensors

    def write(y: Tensor, hp: HookPoint) -> Tensor:
        h = hp.name
        if state.result is None:
            raise ConfigError(f"crosscoder splice: {h!r} ran without a collection pass; call the model itself "
                              f"(model(tokens), run_with_cache, ...), not its blocks directly")
        recons, clean, x = state.result
        i = index[h]
        yf = flatten(y, d_in)
        if yf.shape != x.shape[:-2] + (d_in,):
            raise ShapeError(f"crosscoder splice: {h} is {tuple(yf.shape)} in the writing pass but was "
                             f"{tuple(x.shape[:-2]) + (d_in,)} in the collection pass")
        out = combine(recons[..., i, :], None if clean is None else clean[..., i, :], x[..., i, :].to(y.dtype),
                      errors.get(h), outputs[h])
        return out.reshape(y.shape)

    first = hooks[0]
    shared: dict[str, HookPoint] = {n: getattr(d, n) for n in INTERNAL}
    with contextlib.ExitStack() as stack:
        for h in hooks:
            own = ({"hook_sae_error": errors[h]} if use_error_term else {}) | {"hook_sae_output": outputs[h]}
            stack.enter_context(model.mount_hook_points(h, (shared if h == first else {}) | own))
        stack.enter_context(model.hooks(fwd=[(h, write) for h in hooks]))
        stack.callback(model.register_forward_pre_hook(pre, with_kwargs=True).remove)
        stack.callback(model.register_forward_hook(post, with_kwargs=True).remove)
        names = {n: f"{first}.{n}" for n in shared} | {f"hook_sae_{k}": f"{first}.hook_sae_{k}"
                                                      for k in (("error", "output") if use_error_term else ("output",))}
        yield Splice(model, d, first, use_error_term, sites, names)


__all__ = ["splice_crosscoder", "outer_hooks_only", "collection_stop"]
