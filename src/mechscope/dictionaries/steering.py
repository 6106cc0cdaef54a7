"""Feature steering: add a dictionary latent's decoder direction to the activation it was learned on.

A latent ``i`` of a dictionary at hook ``H`` writes ``acts_i * W_dec[i] / output_scale`` into the
reconstruction. Steering adds ``scale * W_dec[i] / output_scale`` (optionally normalised to unit length)
to ``H`` at the selected positions, as an ordinary ``interventions.Add`` spec, so it composes with every
other intervention and is removed when the ``with`` block exits. ``scale`` is in units of the latent's
activation: ``scale = acts_i`` at a token where it fires adds exactly what the latent contributes there.

Clamping instead of adding (``clamp_latent``) needs the dictionary spliced in: it rewrites
``H.hook_sae_acts_post`` so latent ``i`` takes a fixed value wherever selected, and with the error term
on, the rest of the activation is left as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from mechscope.dictionaries.base import Dictionary
from mechscope.errors import ConfigError


def steering_vector(dictionary: Dictionary, latent: int, *, normalize: bool = False) -> Tensor:
    """The direction latent ``latent`` writes, in the output activation's units ``[d_out]``."""
    if not 0 <= latent < dictionary.cfg.d_sae:
        raise ConfigError(f"latent must be in [0, {dictionary.cfg.d_sae}), got {latent}")
    if dictionary.W_dec.dim() != 2:
        raise ConfigError("steering needs a dictionary with one decoder direction per latent (not a crosscoder)")
    v = dictionary.W_dec[latent].detach() / dictionary.cfg.output_scale
    return v / v.norm().clamp_min(1e-12) if normalize else v


def steering_spec(dictionary: Dictionary, latent: int, scale: float, *, hook: str | None = None,
                  positions: Any = None, normalize: bool = False) -> Any:
    """An ``interventions.Add`` spec adding ``scale *`` the latent's direction at ``hook``.

    Default hook: where the latent *writes*: the SAE's own hook, a transcoder's target hook.
    """
    from mechscope.interventions.spec import Add

    name = hook or getattr(dictionary.cfg, "target_hook_name", None) or dictionary.cfg.hook_name
    if name is None:
        raise ConfigError("the dictionary names no hook_name; pass hook=...")
    return Add(hook=name, vector=steering_vector(dictionary, latent, normalize=normalize), scale=float(scale),
               positions=positions)


@contextlib.contextmanager
def steer(model: Any, dictionary: Dictionary, latent: int, scale: float, *, hook: str | None = None,
          positions: Any = None, normalize: bool = False) -> Iterator[Any]:
    """Run the model with the latent's direction added at its hook for a ``with`` block.

    Example:
        >>> with steer(model, sae, latent=123, scale=8.0):         # doctest: +SKIP
        ...     text = generate(model, "The weather today", max_new_tokens=20)
    """
    from mechscope.interventions.apply import intervene

    spec = steering_spec(dictionary, latent, scale, hook=hook, positions=positions, normalize=normalize)
    with intervene(model, [spec]):
        yield model


@contextlib.contextmanager
def clamp_latent(model: Any, splice_handle: Any, latent: int, value: float) -> Iterator[Any]:
    """Inside ``splice(...)``: set latent ``latent`` to ``value`` at every position (``H.hook_sae_acts_post``)."""
    if not 0 <= latent < splice_handle.dictionary.cfg.d_sae:
        raise ConfigError(f"latent must be in [0, {splice_handle.dictionary.cfg.d_sae}), got {latent}")

    def clamp(acts: Tensor, hook: Any) -> Tensor:
        acts = acts.clone()
        acts[..., latent] = torch.as_tensor(value, dtype=acts.dtype)
        return acts

    with model.hooks(fwd=[(splice_handle["acts_post"], clamp)]):
        yield model


__all__ = ["steering_vector", "steering_spec", "steer", "clamp_latent"]
