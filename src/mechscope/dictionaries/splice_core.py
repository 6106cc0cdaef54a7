"""The pieces every splice shares: mounted names, ``SpliceSites``, ``Splice`` and the output arithmetic.

``splice`` (SAEs, transcoders, and the dispatch) and ``splice_crosscoder`` (the two-pass crosscoder
splice) both build on this module, so neither imports the other's internals; ``splice`` re-exports
everything here. See ``splice`` for what the names and the error term mean.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mechscope.dictionaries.base import Dictionary
from mechscope.errors import HookNameError
from mechscope.hooks.point import HookPoint

LOCAL_NAMES = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons",
               "hook_sae_error", "hook_sae_output")
"""Local names of the hook points a splice mounts under ``W.``."""
INTERNAL = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons")
"""The dictionary's own hook points (the rest are created per splice)."""
HookArg = str | Sequence[str] | None


@dataclass(frozen=True)
class SpliceSites:
    """Where a dictionary is spliced: the hooks it reads and the hooks it replaces, in order."""

    reads: tuple[str, ...]
    """Hooks whose activations the dictionary encodes."""
    writes: tuple[str, ...]
    """Hooks whose activations are replaced (SAE / crosscoder: the same as ``reads``)."""

    @property
    def prefix(self) -> str:
        """The hook the shared points are mounted under (the first written hook)."""
        return self.writes[0]


@dataclass
class Splice:
    """A live splice (yielded by :func:`splice`): what is spliced where, and its hook names."""

    model: Any
    """The model the dictionary runs in."""
    dictionary: Dictionary
    """The spliced dictionary."""
    hook: str
    """The hook the points are mounted under (SAE: ``H``; transcoder: ``H_out``; crosscoder: ``H_1``)."""
    use_error_term: bool
    """Whether the output adds back the reconstruction error."""
    sites: SpliceSites = field(default_factory=lambda: SpliceSites((), ()))
    """The hooks read and written."""
    names: dict[str, str] = field(default_factory=dict)
    """Local name (``hook_sae_acts_post``) -> full hook name (``W.hook_sae_acts_post``)."""

    def __getitem__(self, local: str) -> str:
        """Full hook name of a local one: ``s["hook_sae_acts_post"]`` (``"acts_post"`` also works)."""
        key = local if local.startswith("hook_sae_") else f"hook_sae_{local}"
        if key not in self.names:
            raise HookNameError(f"{local!r} is not mounted by this splice; mounted: {sorted(self.names)}")
        return self.names[key]

    def at(self, hook: str, local: str) -> str:
        """Full name of a per-hook point (``output``/``error``) at written hook ``hook`` (crosscoders)."""
        if hook not in self.sites.writes:
            raise HookNameError(f"{hook!r} is not written by this splice; it writes {list(self.sites.writes)}")
        full = f"{hook}.{local if local.startswith('hook_sae_') else 'hook_sae_' + local}"
        if full not in self.model.hook_dict:
            raise HookNameError(f"{full!r} is not mounted by this splice")
        return full

    @property
    def output_names(self) -> list[str]:
        """``W.hook_sae_output`` of every written hook, in order."""
        return [f"{h}.hook_sae_output" for h in self.sites.writes]


# -- the spliced computation --------------------------------------------------------------------------
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


def reconstruct(dictionary: Dictionary, x: Tensor, clean: bool) -> tuple[Tensor, Tensor | None]:
    """``(recons, recons_clean)``: the output with hooks, and (if ``clean``) without hooks on the internals."""
    recons = dictionary(x).recons
    if not clean:
        return recons, None
    internal = [getattr(dictionary, n) for n in INTERNAL]
    if any(hp.fwd_fns for hp in internal):
        with torch.no_grad(), suspended(internal):
            return recons, dictionary(x).recons.detach()
    return recons, recons.detach()


def combine(recons: Tensor, recons_clean: Tensor | None, target: Tensor, error_hp: HookPoint | None,
            output_hp: HookPoint) -> Tensor:
    """The spliced output (see the module docstring for the error term), in ``target``'s dtype."""
    recons = recons.to(target.dtype)
    if error_hp is None or recons_clean is None:
        return output_hp(recons)
    recons_clean = recons_clean.to(target.dtype)
    err_in = target - recons_clean
    err = error_hp(err_in)
    if err is err_in:  # error not edited: target + (recons - clean) is exactly target when nothing was edited
        return output_hp(target + (recons - recons_clean))
    return output_hp(recons + err)


def flatten(x: Tensor, width: int) -> Tensor:
    """``[batch pos a b]`` -> ``[batch pos a*b]`` when that is what a dictionary of ``width`` reads."""
    if x.shape[-1] != width and x.dim() >= 3 and math.prod(x.shape[2:]) == width:
        return x.reshape(*x.shape[:2], width)
    return x


def new_points(dictionary: Dictionary, use_error_term: bool) -> tuple[HookPoint | None, HookPoint, dict[str, HookPoint]]:
    """``(error, output, all points to mount)`` for a single-output splice."""
    error_hp = HookPoint() if use_error_term else None
    output_hp = HookPoint()
    points = {n: getattr(dictionary, n) for n in INTERNAL}
    if error_hp is not None:
        points["hook_sae_error"] = error_hp
    points["hook_sae_output"] = output_hp
    return error_hp, output_hp, points
