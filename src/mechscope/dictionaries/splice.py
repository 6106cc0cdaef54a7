"""``splice``: run a dictionary inside a model, with its internals as real hook points.

Within ``with splice(model, dictionary, ...) as s:`` the dictionary's output replaces the activation at
the hook(s) it writes. Which hooks it reads and writes follows from its config type:

==============  =====================================  ==========================================
dictionary      reads                                  writes (replaces)
==============  =====================================  ==========================================
SAE (any)       ``H`` (``hook``, default                ``H``: the reconstruction
                ``cfg.hook_name``)
transcoder      ``H_in`` (``hook``, default             ``H_out`` (``target_hook``, default
                ``cfg.hook_name``), left unchanged      ``cfg.target_hook_name``): the prediction
crosscoder      ``H_1..H_n`` (``hook=[...]``, default   every ``H_l``: its layer's reconstruction
                ``cfg.hook_names``)                     (two passes, see ``splice_crosscoder``)
==============  =====================================  ==========================================

A transcoder's ``H_in`` must run before ``H_out`` in the forward pass (``blocks.L.ln2.hook_normalized``
or ``blocks.L.hook_mlp_in`` -> ``blocks.L.hook_mlp_out``): a hook on ``H_in`` records the input, the hook
on ``H_out`` replaces the activation arriving there by the prediction.

The model's ``hook_dict`` gains (through ``HookedModule.mount_hook_points``), under the *written* hook
``W`` (a crosscoder: its first hook)::

    W.hook_sae_input       the activation entering the dictionary    [... d_in] ([... n_layers d_in])
    W.hook_sae_acts_pre    latent pre-activations                     [... d_sae]
    W.hook_sae_acts_post   latent activations (sparse)                [... d_sae]
    W.hook_sae_recons      the reconstruction / prediction            [... d_out] ([... n_layers d_in])
    W.hook_sae_error       target - clean reconstruction (only with use_error_term=True)
    W.hook_sae_output      what the rest of the model reads at W      [... d_out]

(a crosscoder mounts ``hook_sae_error``/``hook_sae_output`` under *each* of its hooks). They work with
``model.hooks``, ``run_with_cache`` and interventions like any other hook point (ablate a latent by
editing ``W.hook_sae_acts_post``), and disappear when the block exits. Hooks on ``W`` itself run in
registration order: those attached before the splice (outside the ``with``) see and may edit the clean
activation, those attached inside see the spliced output.

**Error term.** With ``use_error_term=True`` the output is ``recons + error`` where ``error = target -
recons_clean``: ``target`` is the activation the dictionary replaces (for an SAE its input, for a
transcoder the real ``H_out`` activation, for a crosscoder the clean ``H_l`` activation) and
``recons_clean`` is computed *without* any hooks on the dictionary's internals, so with no edits the model
runs exactly as if nothing were spliced (bit for bit), while an edit of the latents changes the output by
exactly the change of the reconstruction (SAELens's convention). Gradients flow through both terms.

A ``[batch pos n_heads d_head]`` activation (``attn.hook_z``) is flattened to ``n_heads * d_head`` for a
dictionary of that width, as SAELens does.

The shared pieces (``Splice``, ``SpliceSites``, the names, ``reconstruct``/``combine``/``flatten``) live in
``splice_core``, the crosscoder's two-pass splice in ``splice_crosscoder``; this module re-exports them.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from typing import Any

from torch import Tensor

from mechscope.dictionaries.base import Dictionary
from mechscope.dictionaries.crosscoder import CrosscoderConfig
from mechscope.dictionaries.splice_core import (
    INTERNAL,
    LOCAL_NAMES,
    HookArg,
    Splice,
    SpliceSites,
    combine,
    flatten,
    new_points,
    reconstruct,
    suspended,
)
from mechscope.dictionaries.splice_crosscoder import splice_crosscoder
from mechscope.dictionaries.transcoder import TranscoderConfig
from mechscope.errors import ConfigError, HookNameError, ShapeError
from mechscope.hooks.point import HookPoint


# -- compatibility ------------------------------------------------------------------------------------
def _expected_width(model: Any, hook: str) -> tuple[int, ...] | None:
    """Per-position trailing shape of ``hook`` from the registered hook shapes (None if not registered)."""
    from mechscope.hooks.names import registered_axes, resolve_shape

    try:
        axes = registered_axes(hook)
    except HookNameError:
        return None
    sizes = model.cfg.dim_sizes(1, 1) if hasattr(model.cfg, "dim_sizes") else None
    if sizes is None or axes[:2] != ("batch", "pos") or any(a not in sizes for a in axes[2:] if not a.isdigit()):
        return None
    return resolve_shape(axes[2:], sizes)


def _check_width(model: Any, cfg: Any, hook: str, width: int, what: str) -> None:
    """``ShapeError`` unless an activation of ``hook`` is ``width`` wide (or flattens to it)."""
    want = _expected_width(model, hook)
    if want is not None and width not in (want[-1], math.prod(want)):
        allowed = sorted({want[-1], math.prod(want)})
        raise ShapeError(f"{hook} has per-position shape {want} in this model, but the dictionary's "
                         f"{what}={width} (trained on {cfg.hook_name or 'an unknown hook'} of "
                         f"{cfg.model_name or 'an unknown model'}); {what} must be one of {allowed} here")


def _layer(hook: str) -> int | None:
    m = re.match(r"blocks\.(\d+)\.", hook)
    return int(m.group(1)) if m else None


def _one(hook: HookArg, what: str) -> str | None:
    if hook is None or isinstance(hook, str):
        return hook
    raise ConfigError(f"{what} takes one hook name, got {list(hook)!r}")


def splice_sites(model: Any, dictionary: Dictionary, hook: HookArg = None, *, target_hook: str | None = None,
                 check_hook_name: bool = True) -> SpliceSites:
    """The hooks ``dictionary`` reads and writes in ``model``, after checking they fit it.

    ``hook``: SAE, transcoder: one hook (default ``cfg.hook_name``; a transcoder also accepts an
    ``(input, target)`` pair); crosscoder: its hooks (default ``cfg.hook_names``). Raises
    ``HookNameError`` for an unknown hook, ``ConfigError`` for a missing hook, a hook other than the one
    the dictionary was trained on (``check_hook_name=False`` allows it on purpose) or a transcoder whose
    input comes after its target, ``ShapeError`` when a width differs from the hook's.
    """
    cfg = dictionary.cfg
    if isinstance(cfg, CrosscoderConfig):
        if target_hook is not None:
            raise ConfigError("a crosscoder writes the hooks it reads; target_hook does not apply to it")
        sites = _crosscoder_sites(cfg, hook, check_hook_name)
    elif isinstance(cfg, TranscoderConfig):
        if hook is not None and not isinstance(hook, str):
            if len(hook) != 2 or target_hook is not None:
                raise ConfigError(f"a transcoder takes hook=(input, target) or hook=input, target_hook=target; "
                                  f"got hook={list(hook)!r}, target_hook={target_hook!r}")
            hook, target_hook = hook
        sites = _transcoder_sites(cfg, hook, target_hook, check_hook_name)
    else:
        if target_hook is not None:
            raise ConfigError(f"a {cfg.architecture} SAE replaces the hook it reads; target_hook applies only "
                              f"to transcoders")
        sites = _sae_sites(cfg, _one(hook, "an SAE splice"), check_hook_name)
    model.hook_names([*sites.reads, *sites.writes])
    widths = [cfg.d_in] * len(sites.reads) + [cfg.d_output] * len(sites.writes)
    whats = ["d_in"] * len(sites.reads) + ["d_out" if isinstance(cfg, TranscoderConfig) else "d_in"] * len(sites.writes)
    for h, width, what in zip([*sites.reads, *sites.writes], widths, whats):
        _check_width(model, cfg, h, width, what)
    return sites


def _trained_on(cfg: Any, field_name: str, given: Any, want: Any, check: bool) -> None:
    if check and want is not None and given != want:
        raise ConfigError(f"this {cfg.architecture} dictionary was trained on {want!r} ({field_name}), not "
                          f"{given!r}; splice it there, or pass check_hook_name=False to splice it elsewhere on "
                          f"purpose")


def _sae_sites(cfg: Any, hook: str | None, check: bool) -> SpliceSites:
    if cfg.d_output != cfg.d_in:
        raise ConfigError(f"a {cfg.architecture} dictionary with d_out={cfg.d_output} != d_in={cfg.d_in} cannot "
                          f"replace the activation it reads; allowed: SAE-shaped dictionaries, transcoders, "
                          f"crosscoders")
    name = hook or cfg.hook_name
    if name is None:
        raise ConfigError(f"this {cfg.architecture} dictionary's config names no hook_name; pass the hook to "
                          f"splice it at")
    _trained_on(cfg, "hook_name", name, cfg.hook_name, check)
    return SpliceSites((name,), (name,))


def _transcoder_sites(cfg: TranscoderConfig, hook: str | None, target: str | None, check: bool) -> SpliceSites:
    h_in, h_out = hook or cfg.hook_name, target or cfg.target_hook_name
    if h_in is None or h_out is None:
        raise ConfigError(f"a transcoder reads one hook and replaces another; its config names "
                          f"hook_name={cfg.hook_name!r}, target_hook_name={cfg.target_hook_name!r}: pass "
                          f"hook=<input hook> and target_hook=<hook it predicts>")
    _trained_on(cfg, "hook_name", h_in, cfg.hook_name, check)
    _trained_on(cfg, "target_hook_name", h_out, cfg.target_hook_name, check)
    l_in, l_out = _layer(h_in), _layer(h_out)
    if l_in is not None and l_out is not None and l_in > l_out:
        raise ConfigError(f"a transcoder must read an activation computed before the one it replaces; "
                          f"{h_in!r} (layer {l_in}) comes after {h_out!r} (layer {l_out})")
    return SpliceSites((h_in,), (h_out,))


def _crosscoder_sites(cfg: CrosscoderConfig, hook: HookArg, check: bool) -> SpliceSites:
    names = (hook,) if isinstance(hook, str) else tuple(hook) if hook is not None else cfg.hook_names
    if names is None:
        raise ConfigError(f"this crosscoder's config names no hook_names; pass hook=[...] with its "
                          f"{cfg.n_layers} hooks, in the order it was trained on")
    if len(names) != cfg.n_layers or len(set(names)) != len(names):
        raise ConfigError(f"a crosscoder over n_layers={cfg.n_layers} needs {cfg.n_layers} distinct hooks, "
                          f"got {list(names)}")
    _trained_on(cfg, "hook_names", names, cfg.hook_names, check)
    return SpliceSites(names, names)


def check_compatible(model: Any, dictionary: Dictionary, hook: HookArg = None, *, target_hook: str | None = None,
                     check_hook_name: bool = True) -> None:
    """Raise a clear error unless ``dictionary`` can be spliced at ``hook`` (see :func:`splice_sites`)."""
    splice_sites(model, dictionary, hook, target_hook=target_hook, check_hook_name=check_hook_name)


# -- the spliced computation ----------------------------------------------------------------------------
@contextlib.contextmanager
def _splice_sae(model: Any, d: Dictionary, sites: SpliceSites, use_error_term: bool) -> Iterator[Splice]:
    hook = sites.prefix
    error_hp, output_hp, points = new_points(d, use_error_term)

    def replace(x: Tensor, hp: HookPoint) -> Tensor:
        xf = flatten(x, d.cfg.d_in)
        recons, clean = reconstruct(d, xf, use_error_term)
        return combine(recons, clean, xf, error_hp, output_hp).reshape(x.shape)

    with model.mount_hook_points(hook, points), model.hooks(fwd=[(hook, replace)]):
        yield Splice(model, d, hook, use_error_term, sites, {n: f"{hook}.{n}" for n in points})


@contextlib.contextmanager
def _splice_transcoder(model: Any, d: Dictionary, sites: SpliceSites, use_error_term: bool) -> Iterator[Splice]:
    (h_in,), (h_out,) = sites.reads, sites.writes
    error_hp, output_hp, points = new_points(d, use_error_term)
    pending: list[Tensor] = []

    def read(x: Tensor, hp: HookPoint) -> None:
        pending[:] = [x]

    def write(y: Tensor, hp: HookPoint) -> Tensor:
        if not pending:
            raise ConfigError(f"transcoder splice: {h_out!r} ran before its input hook {h_in!r} in this forward "
                              f"pass; a transcoder must read an activation computed before the one it replaces")
        xf, yf = flatten(pending.pop(), d.cfg.d_in), flatten(y, d.cfg.d_output)
        if xf.shape[:-1] != yf.shape[:-1]:
            raise ShapeError(f"transcoder splice: input {h_in} has leading shape {tuple(xf.shape[:-1])} but "
                             f"{h_out} has {tuple(yf.shape[:-1])}; both must be [batch pos ...] of one forward")
        recons, clean = reconstruct(d, xf, use_error_term)
        return combine(recons, clean, yf, error_hp, output_hp).reshape(y.shape)

    def forget(module: Any, args: Any, out: Any) -> None:  # an input never outlives its model call
        pending.clear()

    with contextlib.ExitStack() as stack:
        stack.enter_context(model.mount_hook_points(h_out, points))
        stack.enter_context(model.hooks(fwd=[(h_in, read), (h_out, write)]))
        stack.callback(model.register_forward_hook(forget).remove)
        yield Splice(model, d, h_out, use_error_term, sites, {n: f"{h_out}.{n}" for n in points})


@contextlib.contextmanager
def splice(model: Any, dictionary: Dictionary, hook: HookArg = None, *, target_hook: str | None = None,
           use_error_term: bool = False, check_hook_name: bool = True) -> Iterator[Splice]:
    """Replace the activation(s) the dictionary writes by its output for a ``with`` block.

    Args:
        model: a ``HookedModule`` (``HookedTransformer``).
        dictionary: an SAE-shaped dictionary, a ``Transcoder`` or a ``Crosscoder``.
        hook: where it reads (module docstring); default from its config (``hook_name``/``hook_names``).
        target_hook: a transcoder's replaced hook (default ``cfg.target_hook_name``).
        use_error_term: add back ``target - recons_clean`` so the model output is unchanged unless the
            latents (or the error) are edited.
        check_hook_name: refuse hooks other than the ones the config names.

    Example:
        >>> with splice(model, sae, "blocks.1.hook_resid_post") as s:          # doctest: +SKIP
        ...     logits, cache = model.run_with_cache(tokens, names=[s["acts_post"]])
        >>> with splice(model, transcoder, "blocks.1.ln2.hook_normalized",    # doctest: +SKIP
        ...             target_hook="blocks.1.hook_mlp_out", use_error_term=True) as s:
        ...     logits = model(tokens)
    """
    sites = splice_sites(model, dictionary, hook, target_hook=target_hook, check_hook_name=check_hook_name)
    with splice_at(model, dictionary, sites, use_error_term=use_error_term) as s:
        yield s


@contextlib.contextmanager
def splice_at(model: Any, dictionary: Dictionary, sites: SpliceSites, *,
              use_error_term: bool = False) -> Iterator[Splice]:
    """:func:`splice` at sites already resolved (and checked) by :func:`splice_sites`."""
    if isinstance(dictionary.cfg, CrosscoderConfig):
        ctx = splice_crosscoder(model, dictionary, sites, use_error_term)
    elif isinstance(dictionary.cfg, TranscoderConfig):
        ctx = _splice_transcoder(model, dictionary, sites, use_error_term)
    else:
        ctx = _splice_sae(model, dictionary, sites, use_error_term)
    with ctx as s:
        yield s


__all__ = ["splice", "splice_at", "Splice", "SpliceSites", "splice_sites", "check_compatible", "suspended", "reconstruct",
           "combine", "flatten", "new_points", "HookArg", "LOCAL_NAMES", "INTERNAL"]
