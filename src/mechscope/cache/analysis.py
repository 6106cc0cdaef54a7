"""Analyses of an ``ActivationCache``: residual decompositions, direct logit attribution, the logit lens.

The residual stream is a sum: ``resid_post[L-1] = embed + pos_embed + Σ_l (attn_out[l] + mlp_out[l])``,
and each ``attn_out[l]`` is itself ``Σ_h result[l, h] + b_O`` (with post-sublayer norms, the heads'
results through ``ln1_post`` at its frozen scale: see ``stack_head_results``). Stacking these terms along a
leading ``components`` axis turns "which part of the model did this?" into one tensor operation:

- ``accumulated_resid``: the residual stream as it stands before each layer (the logit lens reads it).
- ``decompose_resid``: the terms that add up to it (embeddings, each attention and MLP output).
- ``stack_head_results``: the per-head terms ``result[l, h]``.
- ``apply_ln_to_stack`` + ``logit_attrs``: direct logit attribution. The final norm is not linear, but
  given the normalisation scale of this forward pass (cached as ``ln_final.hook_scale``) it is: each
  component is centred (LayerNorm) and divided by that scale, as TransformerLens does. The components'
  attributions then add up to the logit difference, up to the constant bias terms.

Every function takes the cache (from ``model.run_with_cache(tokens)``; cache all names, or at least the
ones a function reads) and returns one documented type. ``pos_slice`` picks positions: an ``int`` drops
the ``pos`` axis, a slice / list / tensor keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, Union

import torch
from torch import Tensor

from mechscope.cache.activation_cache import ActivationCache
from mechscope.errors import ConfigError, HookNameError, ShapeError
from mechscope.models.components.frozen_norm import head_contributions

if TYPE_CHECKING:
    from mechscope.models.transformer import HookedTransformer

PosSlice = Union[int, slice, Sequence[int], Tensor, None]
TokenIds = Union[int, Sequence[int], Tensor]


class ResidStack(NamedTuple):
    """Residual-stream components stacked on a leading axis, with one label per component."""

    stack: Tensor
    """[components batch pos d_model] (no ``pos`` axis when ``pos_slice`` was an int)."""
    labels: list[str]
    """Component names, e.g. ``"embed"``, ``"3_attn_out"``, ``"L3H5"``, ``"final_post"``."""


class LogitLens(NamedTuple):
    """Logits read off the residual stream before each layer (and after the last)."""

    logits: Tensor
    """[components batch pos d_vocab_out]: ``unembed(ln_final(resid))`` for each accumulated residual."""
    labels: list[str]
    """As in ``accumulated_resid``: ``"0_pre"`` ... ``"final_post"``."""
    top_tokens: Tensor
    """[components batch pos k] the ``k`` most likely token ids at each stage."""
    top_probs: Tensor
    """[components batch pos k] their probabilities."""
    target_probs: Tensor | None
    """[components batch pos] probability of ``target`` at each stage (None when no target was given)."""


# -- helpers ---------------------------------------------------------------------------------------
def _get(cache: ActivationCache, name: str, pos_slice: PosSlice = None) -> Tensor:
    """``cache[name]`` [batch pos ...] with ``pos_slice`` applied to the pos axis."""
    if name not in cache:
        raise HookNameError(f"{name!r} is not in the cache; run model.run_with_cache(tokens) with names=None "
                            f"(everything) or a list that includes {name!r}")
    return _slice_pos(cache[name], pos_slice)


def _slice_pos(t: Tensor, pos_slice: PosSlice) -> Tensor:
    if pos_slice is None:
        return t
    if isinstance(pos_slice, (int, slice)):
        return t[:, pos_slice]
    idx = pos_slice if isinstance(pos_slice, Tensor) else torch.tensor(list(pos_slice), dtype=torch.long)
    return t.index_select(1, idx.to(t.device).long())


def _check_layer(layer: int | None, n_layers: int) -> int:
    if layer is None:
        return n_layers
    if not 0 <= layer <= n_layers:
        raise ConfigError(f"layer must be in [0, {n_layers}] (n_layers means after the last block), got {layer}")
    return layer


def _resid_name(layer: int, n_layers: int) -> str:
    """The residual stream entering block ``layer`` (``n_layers``: leaving the last block)."""
    return f"blocks.{n_layers - 1}.hook_resid_post" if layer == n_layers else f"blocks.{layer}.hook_resid_pre"


def _align_dirs(d: Tensor, lead: torch.Size) -> Tensor:
    """Directions [*s, d_model] with ``s`` a prefix of ``lead``, viewed to broadcast over [*lead, d_model]."""
    s = tuple(d.shape[:-1])
    if s != tuple(lead[: len(s)]):
        raise ShapeError(f"directions of shape {tuple(d.shape)}: the axes before d_model must be () or a "
                         f"prefix of the stack's batch/pos axes {tuple(lead)}")
    return d.reshape(*s, *([1] * (len(lead) - len(s))), d.shape[-1])


def _ids(ids: TokenIds, lead: torch.Size, what: str) -> Tensor:
    """Token ids broadcast to ``lead`` ([batch] ids apply to every position; [batch pos] per position)."""
    t = torch.as_tensor(ids, dtype=torch.long)
    if t.shape != lead[: t.dim()]:
        raise ShapeError(f"{what}: shape {tuple(t.shape)} must be () or a prefix of the stack's "
                         f"batch/pos axes {tuple(lead)}")
    return t.reshape(*t.shape, *([1] * (len(lead) - t.dim()))).expand(lead)


# -- residual stacks -------------------------------------------------------------------------------
def accumulated_resid(cache: ActivationCache, n_layers: int, layer: int | None = None, incl_mid: bool = False,
                      pos_slice: PosSlice = None) -> ResidStack:
    """The residual stream before blocks ``0..layer`` (``layer=n_layers`` adds the final ``resid_post``).

    Returns ``ResidStack`` with stack [components batch pos d_model] and labels ``"0_pre"``,
    (``"0_mid"`` when ``incl_mid``), ..., ``"final_post"``. ``layer=None`` means ``n_layers``.
    ``incl_mid`` needs sequential blocks with an MLP (parallel and attention-only blocks have no
    ``resid_mid``).
    """
    layer = _check_layer(layer, n_layers)
    names: list[str] = []
    labels: list[str] = []
    for i in range(layer + 1):
        if i == n_layers:
            names.append(_resid_name(n_layers, n_layers))
            labels.append("final_post")
            break
        names.append(f"blocks.{i}.hook_resid_pre")
        labels.append(f"{i}_pre")
        if incl_mid and i < layer:
            mid = f"blocks.{i}.hook_resid_mid"
            if mid not in cache:
                raise ConfigError(f"incl_mid=True but {mid!r} is not cached: models with parallel or "
                                  "attention-only blocks have no resid_mid; cache it or pass incl_mid=False")
            names.append(mid)
            labels.append(f"{i}_mid")
    return ResidStack(torch.stack([_get(cache, n, pos_slice) for n in names]), labels)


def decompose_resid(cache: ActivationCache, model: HookedTransformer, layer: int | None = None,
                    pos_slice: PosSlice = None) -> ResidStack:
    """The terms whose sum is the residual stream entering block ``layer`` (None: after the last block).

    Components: ``embed``, ``pos_embed`` (learned positions only), then ``{l}_attn_out`` and
    ``{l}_mlp_out`` for each ``l < layer``. Stack [components batch pos d_model]; summing over
    components gives ``blocks.{layer}.hook_resid_pre`` (or the final ``hook_resid_post``).
    """
    cfg = model.cfg
    layer = _check_layer(layer, cfg.n_layers)
    labels = ["embed"] + (["pos_embed"] if cfg.positional.kind == "learned" else [])
    names = ["hook_embed"] + (["hook_pos_embed"] if cfg.positional.kind == "learned" else [])
    for i in range(layer):
        subs = ["attn_out"] + (["mlp_out"] if cfg.mlp is not None else [])
        names += [f"blocks.{i}.hook_{s}" for s in subs]
        labels += [f"{i}_{s}" for s in subs]
    return ResidStack(torch.stack([_get(cache, n, pos_slice) for n in names]), labels)


def stack_head_results(cache: ActivationCache, model: HookedTransformer, layer: int | None = None,
                       pos_slice: PosSlice = None, incl_remainder: bool = False) -> ResidStack:
    """Each head's output ``result[l, h]`` for blocks ``l < layer``: stack [l·h batch pos d_model].

    Reads ``blocks.l.attn.hook_result`` when every needed layer cached it, otherwise computes
    ``z[l] @ W_O[l]`` from ``hook_z`` (cheaper to cache). Labels ``"L{l}H{h}"``. Output biases ``b_O``
    are not part of any head; ``incl_remainder`` appends a ``"remainder"`` component (the residual entering
    block ``layer`` minus all heads) so that the stack sums to that residual.

    With ``norm.post_sublayer`` (Gemma 2/3) a head's term is what it adds to the residual: its result through
    ``ln1_post`` with the norm's scale frozen at the forward's (``blocks.l.ln1_post.hook_scale`` if cached,
    else recomputed from the heads' sum + ``b_O``), times the norm's weight (``frozen_norm.head_contributions``).
    A layer's heads then sum to its ``hook_attn_out`` (minus the norm's share of ``b_O`` and its bias, if any).
    """
    cfg = model.cfg
    layer = _check_layer(layer, cfg.n_layers)
    H = cfg.n_heads
    labels = [f"L{i}H{h}" for i in range(layer) for h in range(H)]
    if layer == 0:
        probe = _get(cache, _resid_name(0, cfg.n_layers), pos_slice)
        stack = probe.new_zeros((0, *probe.shape))
    else:
        if all(f"blocks.{i}.attn.hook_result" in cache for i in range(layer)):
            res = torch.stack([_get(cache, f"blocks.{i}.attn.hook_result", pos_slice) for i in range(layer)])
        else:
            z = torch.stack([_get(cache, f"blocks.{i}.attn.hook_z", pos_slice) for i in range(layer)])
            W_O = model.W_O.detach()[:layer].to(z.dtype)  # [l h e d]
            res = torch.einsum("l...he,lhed->l...hd", z, W_O)
        if cfg.norm.post_sublayer:  # each head through ln1_post at the forward's scale (frozen_norm)
            post = [f"blocks.{i}.ln1_post.hook_scale" for i in range(layer)]
            res = torch.stack([head_contributions(model, i, res[i], _get(cache, n, pos_slice) if n in cache else None)
                               for i, n in enumerate(post)])
        stack = res.movedim(-2, 1).flatten(0, 1)  # [l b (p) h d] -> [(l h) b (p) d]
    if incl_remainder:
        total = _get(cache, _resid_name(layer, cfg.n_layers), pos_slice)
        stack = torch.cat([stack, (total - stack.sum(0))[None]])
        labels.append("remainder")
    return ResidStack(stack, labels)


# -- norms and direct logit attribution ------------------------------------------------------------
def apply_ln_to_stack(stack: Tensor, cache: ActivationCache, model: HookedTransformer,
                      layer: int | None = None, pos_slice: PosSlice = None) -> Tensor:
    """Normalise each component as the norm did on this forward pass: [components ... d_model] -> same.

    Uses the *cached* scale (``ln_final.hook_scale``, or ``blocks.{layer}.ln1.hook_scale`` for
    ``layer < n_layers``) instead of recomputing it per component, which makes the norm linear so the
    components still add up (TransformerLens's convention). LayerNorm also centres each component.
    The norm's weight and bias are *not* applied: ``logit_directions`` folds the final weight into the
    unembedding directions instead. Models without norms return ``stack`` unchanged.
    ``pos_slice`` must be the one used to build ``stack``.
    """
    cfg = model.cfg
    if cfg.norm.kind == "none":
        return stack
    layer = _check_layer(layer, cfg.n_layers)
    name = "ln_final.hook_scale" if layer == cfg.n_layers else f"blocks.{layer}.ln1.hook_scale"
    scale = _get(cache, name, pos_slice)  # [batch (pos) 1]
    if tuple(stack.shape[-scale.dim():-1]) != tuple(scale.shape[:-1]):
        raise ShapeError(f"apply_ln_to_stack: stack {tuple(stack.shape)} does not end in the cached scale's "
                         f"axes {tuple(scale.shape[:-1])} + d_model; pass the pos_slice used to build it")
    if cfg.norm.kind == "layernorm":
        stack = stack - stack.mean(-1, keepdim=True)
    return stack / scale.to(stack.dtype)


def logit_directions(model: HookedTransformer, tokens: TokenIds, incorrect_tokens: TokenIds | None = None
                     ) -> Tensor:
    """Unembedding directions [*tokens.shape, d_model]: ``w_final ⊙ (W_U[:, t] − W_U[:, t_incorrect])``.

    ``w_final`` is the final norm's weight (ones if folded or absent), so a normalised residual
    (``apply_ln_to_stack``) dotted with a direction gives its contribution to that logit (difference).
    """
    W_U = model.W_U.detach()
    t = torch.as_tensor(tokens, dtype=torch.long)
    dirs = W_U.T[t]
    if incorrect_tokens is not None:
        bad = torch.as_tensor(incorrect_tokens, dtype=torch.long)
        if bad.shape != t.shape:
            raise ShapeError(f"incorrect_tokens shape {tuple(bad.shape)} must equal tokens shape {tuple(t.shape)}")
        dirs = dirs - W_U.T[bad]
    w = getattr(model.ln_final, "w", None)
    return dirs * w.detach() if w is not None else dirs


def logit_attrs(stack: Tensor, cache: ActivationCache, model: HookedTransformer, tokens: TokenIds | None = None,
                incorrect_tokens: TokenIds | None = None, *, directions: Tensor | None = None,
                pos_slice: PosSlice = None) -> Tensor:
    """Direct logit attribution: each component's contribution to a logit (difference) [components ...].

    ``stack`` [components batch pos d_model] (raw residual terms, e.g. from ``decompose_resid`` or
    ``stack_head_results``) is normalised with the cached final scale (``apply_ln_to_stack``) and dotted
    with ``logit_directions(model, tokens, incorrect_tokens)``, or with ``directions`` [..., d_model]
    given directly. ``tokens`` may be one id, [batch] (the same answer at every position) or [batch pos].
    ``directions``' axes before ``d_model`` must be () or a prefix of the stack's batch/pos axes.
    Summed over a complete decomposition, the attributions equal the logit (difference) minus the
    constant terms ``ln_final.b · (W_U[:, t] − W_U[:, t'])`` and ``b_U[t] − b_U[t']``.
    """
    lead = stack.shape[1:-1]
    if tokens is not None and directions is None:
        bad = None if incorrect_tokens is None else _ids(incorrect_tokens, lead, "incorrect_tokens")
        directions = logit_directions(model, _ids(tokens, lead, "tokens"), bad)
    elif directions is None or tokens is not None:
        raise ConfigError("logit_attrs: pass exactly one of tokens (answer token ids) or directions")
    normed = apply_ln_to_stack(stack, cache, model, None, pos_slice)
    return (normed * _align_dirs(directions.to(normed.dtype), lead)).sum(-1)


def logit_lens(cache: ActivationCache, model: HookedTransformer, layer: int | None = None,
               incl_mid: bool = False, pos_slice: PosSlice = None, k: int = 5,
               target: TokenIds | None = None) -> LogitLens:
    """Read the residual stream before each layer through the final norm and the unembedding.

    Each accumulated residual (``accumulated_resid``) is normalised with its *own* statistics by
    ``ln_final`` (weight and bias included) and unembedded, so the ``"final_post"`` row equals the
    model's logits. ``target`` (one id, [batch] or [batch pos]) adds the probability of that token.
    """
    acc = accumulated_resid(cache, model.cfg.n_layers, layer, incl_mid, pos_slice)
    with torch.no_grad():
        # every norm module (the identity too) has normalize(): the norm without firing hooks
        normed = model.ln_final.normalize(acc.stack.to(model.W_U.dtype))  # type: ignore[operator]
        logits = normed @ model.W_U
        if model.unembed.b_U is not None:
            logits = logits + model.unembed.b_U
        probs = torch.softmax(logits, dim=-1)
    top_probs, top_tokens = probs.topk(min(k, probs.shape[-1]), dim=-1)
    target_probs = None
    if target is not None:
        ids = _ids(target, probs.shape[1:-1], "target").expand(probs.shape[:-1])
        target_probs = probs.gather(-1, ids[..., None].to(probs.device))[..., 0]
    return LogitLens(logits, acc.labels, top_tokens, top_probs, target_probs)
