"""``splice``: run a dictionary inside a model at a hook, with its internals as real hook points.

Within ``with splice(model, sae, H):`` the activation at hook ``H`` is replaced by the dictionary's
reconstruction, and the model's ``hook_dict`` gains (through ``HookedModule.mount_hook_points``)::

    H.hook_sae_input       the clean activation entering the dictionary    [... d_in]
    H.hook_sae_acts_pre    latent pre-activations                           [... d_sae]
    H.hook_sae_acts_post   latent activations (sparse)                      [... d_sae]
    H.hook_sae_recons      the reconstruction                               [... d_in]
    H.hook_sae_error       input - clean reconstruction (only with use_error_term=True)
    H.hook_sae_output      what the rest of the model reads                 [... d_in]

They work with ``model.hooks``, ``run_with_cache`` and interventions like any other hook point (ablate a
latent by editing ``H.hook_sae_acts_post``), and disappear when the block exits. Hooks on ``H`` itself
run in registration order: those attached before the splice (outside the ``with``) see and may edit the
clean activation, those attached inside see the spliced output.

**Error term.** With ``use_error_term=True`` the output is ``recons + error`` where ``error = x -
recons_clean`` is computed from the dictionary *without* any hooks on its internals, so with no edits
the model runs exactly as if nothing were spliced (bit for bit), while an edit of the latents changes
the output by exactly the change of the reconstruction (SAELens's convention). Gradients flow through
both terms.

A ``[batch pos n_heads d_head]`` activation (``attn.hook_z``) is flattened to ``n_heads * d_head`` for a
dictionary of that width, as SAELens does.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mechscope.dictionaries.base import Dictionary
from mechscope.errors import ConfigError, HookNameError, ShapeError
from mechscope.hooks.point import HookPoint

LOCAL_NAMES = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons",
               "hook_sae_error", "hook_sae_output")
"""Local names of the hook points a splice mounts under ``H.``."""
_INTERNAL = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons")


@dataclass
class Splice:
    """A live splice (yielded by :func:`splice`): what is spliced where, and its hook names."""

    model: Any
    """The model the dictionary runs in."""
    dictionary: Dictionary
    """The spliced dictionary."""
    hook: str
    """The hook ``H`` whose activation is replaced."""
    use_error_term: bool
    """Whether the output adds back the reconstruction error."""
    names: dict[str, str] = field(default_factory=dict)
    """Local name (``hook_sae_acts_post``) -> full hook name (``H.hook_sae_acts_post``)."""

    def __getitem__(self, local: str) -> str:
        """Full hook name of a local one: ``s["hook_sae_acts_post"]`` (``"acts_post"`` also works)."""
        key = local if local.startswith("hook_sae_") else f"hook_sae_{local}"
        if key not in self.names:
            raise HookNameError(f"{local!r} is not mounted by this splice; mounted: {sorted(self.names)}")
        return self.names[key]


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


def check_compatible(model: Any, dictionary: Dictionary, hook: str, *, check_hook_name: bool = True) -> None:
    """Raise a clear error unless ``dictionary`` can replace the activation at ``hook`` of ``model``.

    ``HookNameError`` for an unknown hook, ``ConfigError`` when the dictionary was trained on another
    hook (``check_hook_name=False`` allows it) or is not an SAE-shaped dictionary, ``ShapeError`` when
    its ``d_in`` is not the hook's width.
    """
    model.hook_names(hook)
    cfg = dictionary.cfg
    if cfg.d_output != cfg.d_in or dictionary.b_dec.dim() != 1 or hasattr(cfg, "d_out"):
        raise ConfigError(f"splice replaces an activation by its reconstruction, so it needs an SAE-shaped "
                          f"dictionary (one input, output of the same width); got a {cfg.architecture} "
                          f"(transcoders and crosscoders read and write different activations)")
    if check_hook_name and cfg.hook_name is not None and cfg.hook_name != hook:
        raise ConfigError(f"this dictionary was trained on {cfg.hook_name!r}, not {hook!r}; splice it there, "
                          f"or pass check_hook_name=False to splice it elsewhere on purpose")
    want = _expected_width(model, hook)
    if want is not None and cfg.d_in not in (want[-1], math.prod(want)):
        raise ShapeError(f"{hook} has per-position shape {want} in this model, but the dictionary reads "
                         f"d_in={cfg.d_in} (trained on {cfg.hook_name or 'an unknown hook'} of "
                         f"{cfg.model_name or 'an unknown model'})")


@contextlib.contextmanager
def suspended(points: list[HookPoint]) -> Iterator[None]:
    """Detach every forward function of ``points`` for a block (to compute the clean reconstruction)."""
    saved = [hp.fwd_fns for hp in points]
    try:
        for hp in points:
            hp.fwd_fns = []
        yield
    finally:
        for hp, fns in zip(points, saved):
            hp.fwd_fns = fns


def _run(dictionary: Dictionary, x: Tensor, error_hp: HookPoint | None, output_hp: HookPoint) -> Tensor:
    """The spliced computation on ``x [... d_in]`` (see the module docstring for the error term)."""
    recons = dictionary(x).recons.to(x.dtype)
    if error_hp is None:
        return output_hp(recons)
    internal = [getattr(dictionary, n) for n in _INTERNAL]
    if any(hp.fwd_fns for hp in internal):
        with torch.no_grad(), suspended(internal):
            clean = dictionary(x).recons.to(x.dtype)
    else:
        clean = recons
    err_in = x - clean.detach()
    err = error_hp(err_in)
    if err is err_in:  # error not edited: x + (recons - clean) is exactly x when nothing was edited
        out = x + (recons - clean.detach())
    else:
        out = recons + err
    return output_hp(out)


@contextlib.contextmanager
def splice(model: Any, dictionary: Dictionary, hook: str, *, use_error_term: bool = False,
           check_hook_name: bool = True) -> Iterator[Splice]:
    """Replace the activation at ``hook`` by ``dictionary``'s output for a ``with`` block.

    Args:
        model: a ``HookedModule`` (``HookedTransformer``).
        dictionary: an SAE-shaped ``Dictionary`` whose ``d_in`` is the hook's width.
        hook: full hook name, e.g. ``blocks.15.hook_resid_post``.
        use_error_term: add back ``x - recons_clean`` so the model output is unchanged unless the
            latents (or the error) are edited.
        check_hook_name: refuse a dictionary whose config names a different hook.

    Example:
        >>> with splice(model, sae, "blocks.1.hook_resid_post") as s:          # doctest: +SKIP
        ...     logits, cache = model.run_with_cache(tokens, names=[s["acts_post"]])
    """
    check_compatible(model, dictionary, hook, check_hook_name=check_hook_name)
    error_hp = HookPoint() if use_error_term else None
    output_hp = HookPoint()
    points = {n: getattr(dictionary, n) for n in _INTERNAL}
    if error_hp is not None:
        points["hook_sae_error"] = error_hp
    points["hook_sae_output"] = output_hp
    d_in = dictionary.cfg.d_in

    def replace(x: Tensor, hp: HookPoint) -> Tensor:
        if x.shape[-1] != d_in and x.dim() >= 3 and math.prod(x.shape[2:]) == d_in:
            return _run(dictionary, x.reshape(*x.shape[:2], d_in), error_hp, output_hp).reshape(x.shape)
        return _run(dictionary, x, error_hp, output_hp)

    with model.mount_hook_points(hook, points), model.hooks(fwd=[(hook, replace)]):
        yield Splice(model, dictionary, hook, use_error_term, {n: f"{hook}.{n}" for n in points})


__all__ = ["splice", "Splice", "check_compatible", "suspended", "LOCAL_NAMES"]
