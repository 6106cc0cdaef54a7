"""Causal K-composition: which earlier head does a later head's *key* actually read?

The weight-based K-composition score (``analysis.weights.composition_scores``) says how much a sender head's
OV output overlaps a receiver head's QK key side; it is a proxy (Elhage et al. 2021 call it a heuristic) and
can rank a head first that the receiver does not depend on. :func:`key_path_effects` measures the dependence
directly: for every sender head in one layer it removes that head's output from the receivers' *key input
only* (queries, values and every other path untouched; ``hook_k_input``), and reports how much each receiver
head's detector score (e.g. induction) falls. All sender heads are ablated at once as variants in the batch:
one clean forward and one batched patched forward, no loop over heads.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechscope.analysis.heads import pattern_scores
from mechscope.errors import ConfigError, ShapeError
from mechscope.models.components.frozen_norm import head_contributions


@torch.inference_mode()
def key_path_effects(model: Any, tokens: Int[Tensor, "batch pos"], target: Float[Tensor, "batch query_pos key_pos"],
                     *, sender_layer: int, receiver_layer: int, ablation: str = "mean"
                     ) -> tuple[Float[Tensor, "n_senders n_receivers"], Float[Tensor, " n_receivers"]]:
    """(drop, clean): ``drop[s, r]`` = receiver head r's score on ``target`` minus its score when sender head s's
    output is removed from r's key input; ``clean[r]`` = the unablated score.

    ``ablation`` ``mean`` replaces the sender's output by its mean over batch and positions (removes what it
    says about *this* token, keeps its constant offset, which the key's norm would otherwise see vanish);
    ``zero`` subtracts it entirely. Grouped-query models: the sender is removed from every key-value head.
    With post-sublayer norms (Gemma 2/3) a sender's output is what it adds to the residual: its result through
    ``ln1_post`` at the scale of the clean forward (``frozen_norm.head_contributions``).
    """
    n_layers = model.cfg.n_layers
    if not 0 <= sender_layer < receiver_layer < n_layers:
        raise ConfigError(f"key_path_effects needs 0 <= sender_layer < receiver_layer < n_layers={n_layers}, "
                          f"got sender_layer={sender_layer}, receiver_layer={receiver_layer}")
    if ablation not in ("mean", "zero"):
        raise ConfigError(f"key_path_effects ablation must be 'mean' or 'zero', got {ablation!r}")
    if tokens.dim() != 2 or target.shape != (*tokens.shape, tokens.shape[1]):
        raise ShapeError(f"tokens must be [batch pos] and target [batch pos pos]; got {tuple(tokens.shape)} "
                         f"and {tuple(target.shape)}")
    res_name = f"blocks.{sender_layer}.attn.hook_result"
    pat_name = f"blocks.{receiver_layer}.attn.hook_pattern"
    post_name = f"blocks.{sender_layer}.ln1_post.hook_scale"
    names = [res_name, pat_name] + ([post_name] if model.cfg.norm.post_sublayer else [])
    _, cache = model.run_with_cache(tokens, names=names, stop_at_layer=receiver_layer + 1)
    # what each sender head adds to the residual (through ln1_post at its frozen scale, if the model has one)
    result = head_contributions(model, sender_layer, cache[res_name], cache.get(post_name)).float()  # [b p n_s d]
    clean = pattern_scores(cache[pat_name].float()[None], target)[0]  # [n_r]
    removed = result - result.mean((0, 1), keepdim=True) if ablation == "mean" else result
    n_s, (b, p) = result.shape[2], tokens.shape
    delta = removed.permute(2, 0, 1, 3).reshape(n_s * b, p, 1, -1)  # variant-major [n_s·b p 1 d]

    def remove(k_in: Tensor, hook: Any) -> Tensor:
        return k_in - delta.to(k_in.dtype)

    patterns: list[Tensor] = []

    def keep(pattern: Tensor, hook: Any) -> None:
        patterns.append(pattern.float())

    model.run_with_hooks(tokens.repeat(n_s, 1), stop_at_layer=receiver_layer + 1,
                         fwd_hooks=[(f"blocks.{receiver_layer}.hook_k_input", remove), (pat_name, keep)])
    ablated = pattern_scores(patterns[0].view(n_s, b, *patterns[0].shape[1:]), target)  # [n_s n_r]
    return clean[None, :] - ablated, clean
