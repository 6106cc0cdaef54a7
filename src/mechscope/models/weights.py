"""Weight processing: explicit, pure ``(state_dict, config) -> (state_dict, config)`` transforms.

Each transform rewrites the weights of a model into an equivalent form that is easier to read, while the
model's output distribution (``log_softmax`` of the logits) stays the same. None of them is ever applied
at load time: numbers match the source model until the user asks for a transform by name.

- ``fold_layer_norm``: a norm computes ``n(x) * w + b`` and the next linear map reads it through ``W``;
  ``(n w + b) W = n (diag(w) W) + b W``, so ``w`` moves into the reading weights and ``b`` into their
  biases (created where the model had none), leaving identity-affine norms. For LayerNorm ``n(x)`` has
  zero mean, so the reading weights may also be centred over ``d_model`` (TransformerLens does this).
- ``center_writing_weights``: LayerNorm removes the mean of the residual stream before anything reads
  it, so everything that writes to the residual (``W_E``, ``W_pos``, ``W_O``, ``W_out`` and their biases)
  may be centred over ``d_model``. Only valid when every norm is LayerNorm.
- ``center_unembed``: softmax is invariant to adding a constant to all logits, so ``W_U`` and ``b_U``
  may be centred over the vocabulary.
- ``fold_value_biases``: each attention pattern row sums to one, so a value bias reaches the output as
  the constant ``Σ_h b_V[h] W_O[h]``; it moves into ``b_O``.

A transform returns ``Weights(state, cfg)`` because some change the architecture (biases appear, norm
biases vanish). ``apply_transform(model, fn)`` builds the new ``HookedTransformer`` from that pair, and
``process_weights(model)`` applies every applicable transform in TransformerLens's order.
Transforms never modify their input tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from mechscope.errors import ConfigError
from mechscope.models.config import ModelConfig

if TYPE_CHECKING:
    from mechscope.models.transformer import HookedTransformer

StateDict = dict[str, Tensor]


class Weights(NamedTuple):
    """A consistent (state dict, config) pair: ``HookedTransformer(cfg)`` accepts ``state`` exactly."""

    state: StateDict
    """Parameter name -> tensor (the model's ``state_dict`` layout)."""
    cfg: ModelConfig
    """The config the state belongs to (a transform may add biases or drop norm biases)."""


Transform = Callable[..., Weights]


def _work(t: Tensor) -> Tensor:
    """``t`` in at least float32, so folding half-precision weights does not round twice."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _fold_into(state: StateDict, w: Tensor, b: Tensor | None, weight: str, bias: str | None,
               d_axis: int, center: bool) -> None:
    """Fold a norm's ``w``/``b`` into ``state[weight]`` (its ``d_model`` axis is ``d_axis``) and its bias.

    ``bias`` None means the reading layer has no bias slot (only allowed when ``b`` is None).
    """
    W = state[weight]
    shape = [1] * W.dim()
    shape[d_axis] = -1
    Wf = _work(W)
    if b is not None and bias is not None:
        # b @ W over the d_model axis: the constant the norm bias adds to this layer's output
        contrib = torch.tensordot(_work(b), Wf, dims=([0], [d_axis]))
        old = state.get(bias)
        new_b = contrib if old is None else _work(old) + contrib
        state[bias] = new_b.to(W.dtype)
    Wf = Wf * _work(w).view(shape)
    if center:
        Wf = Wf - Wf.mean(dim=d_axis, keepdim=True)
    state[weight] = Wf.to(W.dtype)


def _reset_norm(state: StateDict, prefix: str, drop_bias: bool) -> None:
    w = state[f"{prefix}.w"]
    state[f"{prefix}.w"] = torch.ones_like(w)
    if drop_bias:
        state.pop(f"{prefix}.b", None)


def fold_layer_norm(state: StateDict, cfg: ModelConfig, *, center_reading: bool = True) -> Weights:
    """Fold every norm's weight (and bias) into the layers that read it; norms become identity-affine.

    ``ln1`` folds into ``W_Q``/``W_K``/``W_V`` (and ``b_Q``/``b_K``/``b_V``), ``ln2`` into ``W_in`` /
    ``W_gate`` (and ``b_in``), ``ln_final`` into ``W_U`` (and ``b_U``). Biases are created (config flags
    switched on) where a LayerNorm bias needs a slot. The LayerNorm bias parameters are removed
    (``norm.bias=False``); the norm weights become ones.

    Args:
        center_reading: for LayerNorm, also subtract the mean over ``d_model`` from the reading weights
            (exact, since a LayerNorm output has zero mean). Ignored for RMSNorm.

    Raises:
        ConfigError: the model has no norms, or a gated MLP reads a LayerNorm with a bias (``W_gate`` has
            no bias slot to receive it).
    """
    kind = cfg.norm.kind
    if kind == "none":
        raise ConfigError("fold_layer_norm: this model has no norms (norm.kind='none'); nothing to fold")
    has_b = kind == "layernorm" and cfg.norm.bias
    center = center_reading and kind == "layernorm"
    if has_b and cfg.mlp is not None and cfg.mlp.kind == "gated":
        raise ConfigError("fold_layer_norm: a gated MLP has no gate bias to receive the LayerNorm bias; "
                          "folding is supported for LayerNorm with bias + standard MLP, or for RMSNorm")
    out = dict(state)
    new_cfg = cfg
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}"
        b1 = out.get(f"{p}.ln1.b") if has_b else None
        for m in ("Q", "K", "V"):
            _fold_into(out, out[f"{p}.ln1.w"], b1, f"{p}.attn.W_{m}", f"{p}.attn.b_{m}", 1, center)
        _reset_norm(out, f"{p}.ln1", has_b)
        if cfg.mlp is None:
            continue
        b2 = out.get(f"{p}.ln2.b") if has_b else None
        w2 = out[f"{p}.ln2.w"]
        if cfg.mlp.kind == "gated":
            _fold_into(out, w2, None, f"{p}.mlp.W_gate", None, 0, center)
        _fold_into(out, w2, b2, f"{p}.mlp.W_in", f"{p}.mlp.b_in", 0, center)
        if b2 is not None and f"{p}.mlp.b_out" not in out:
            out[f"{p}.mlp.b_out"] = torch.zeros_like(out[f"{p}.mlp.W_out"][0])
        _reset_norm(out, f"{p}.ln2", has_b)
    bf = out.get("ln_final.b") if has_b else None
    _fold_into(out, out["ln_final.w"], bf, "unembed.W_U", "unembed.b_U", 0, center)
    _reset_norm(out, "ln_final", has_b)
    if has_b:  # the LayerNorm biases now live in b_Q/b_K/b_V, b_in and b_U
        mlp = dataclasses.replace(cfg.mlp, bias=True) if cfg.mlp is not None else None
        new_cfg = cfg.replace(attention=dataclasses.replace(cfg.attention, qkv_bias=True), mlp=mlp,
                              norm=dataclasses.replace(cfg.norm, bias=False), unembed_bias=True)
    return Weights(out, new_cfg)


def center_writing_weights(state: StateDict, cfg: ModelConfig) -> Weights:
    """Subtract the ``d_model`` mean from everything that writes to the residual stream.

    Centres ``W_E``, ``W_pos``, ``W_O``, ``b_O``, ``W_out``, ``b_out``. Exact only when every reader of
    the residual stream is a LayerNorm (which removes the mean anyway).

    Raises:
        ConfigError: the norm is RMSNorm or absent (the mean of the residual would then matter).
    """
    if cfg.norm.kind != "layernorm":
        raise ConfigError(f"center_writing_weights needs LayerNorm before every reader of the residual "
                          f"stream (it removes the mean); this model has norm.kind={cfg.norm.kind!r}, "
                          "for which centring would change the outputs")
    out = dict(state)

    def center(name: str) -> None:
        if name in out:
            t = out[name]
            tf = _work(t)
            out[name] = (tf - tf.mean(-1, keepdim=True)).to(t.dtype)

    center("embed.W_E")
    center("pos_embed.W_pos")
    for layer in range(cfg.n_layers):
        for name in ("attn.W_O", "attn.b_O", "mlp.W_out", "mlp.b_out"):
            center(f"blocks.{layer}.{name}")
    return Weights(out, cfg)


def center_unembed(state: StateDict, cfg: ModelConfig) -> Weights:
    """Subtract the vocabulary mean from ``W_U`` (and ``b_U``): every logit moves by the same amount."""
    out = dict(state)
    for name in ("unembed.W_U", "unembed.b_U"):
        if name in out:
            t = out[name]
            tf = _work(t)
            out[name] = (tf - tf.mean(-1, keepdim=True)).to(t.dtype)
    return Weights(out, cfg)


def fold_value_biases(state: StateDict, cfg: ModelConfig) -> Weights:
    """Move ``b_V`` into ``b_O``: ``b_O += Σ_h b_V[h] W_O[h]`` and ``b_V = 0``.

    Exact because every attention pattern row sums to one. Grouped-query models repeat each key/value
    head's bias for the query heads that share it. ``b_O`` is created (``attention.out_bias=True``) when
    missing. A model without QKV biases is returned unchanged.
    """
    if not cfg.attention.qkv_bias:
        return Weights(dict(state), cfg)
    out = dict(state)
    rep = cfg.n_heads // cfg.attention.kv_heads
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}.attn"
        b_V, W_O = out[f"{p}.b_V"], out[f"{p}.W_O"]
        b_rep = _work(b_V).repeat_interleave(rep, dim=0)  # [n_heads d_head]
        contrib = torch.einsum("he,hed->d", b_rep, _work(W_O))
        old = out.get(f"{p}.b_O")
        out[f"{p}.b_O"] = (contrib if old is None else _work(old) + contrib).to(W_O.dtype)
        out[f"{p}.b_V"] = torch.zeros_like(b_V)
    new_cfg = cfg if cfg.attention.out_bias else cfg.replace(attention=dataclasses.replace(cfg.attention, out_bias=True))
    return Weights(out, new_cfg)


def apply_transform(model: HookedTransformer, fn: Transform, **kwargs: Any) -> HookedTransformer:
    """A new model holding ``fn(model.state_dict(), model.cfg, **kwargs)``; ``model`` is not changed.

    The new model keeps the tokenizer, dtype, device and train/eval mode of ``model``.

    Example:
        >>> folded = apply_transform(model, fold_layer_norm)  # doctest: +SKIP
    """
    weights = fn(_state_of(model), model.cfg, **kwargs)
    return _build(model, weights, f"{getattr(fn, '__name__', 'transform')}(...)")


def process_weights(model: HookedTransformer, *, fold_ln: bool = True, center_writing: bool = True,
                    center_unembed: bool = True, fold_value_biases: bool = True) -> HookedTransformer:
    """Apply every requested transform that is valid for this model (TransformerLens's defaults and order).

    Order: fold norms, centre writing weights, centre the unembedding, fold value biases. ``fold_ln`` is
    skipped for models without norms, ``center_writing`` for models whose norm is not LayerNorm;
    ``fold_value_biases`` is a no-op without QKV biases. Returns a new model.
    """
    kind = model.cfg.norm.kind
    steps = [step for step, wanted in ((_FOLD_LN, fold_ln and kind != "none"),
                                       (_CENTER_WRITING, center_writing and kind == "layernorm"),
                                       (_CENTER_UNEMBED, center_unembed),
                                       (_FOLD_VALUE_BIASES, fold_value_biases)) if wanted]
    weights = Weights(_state_of(model), model.cfg)
    for step in steps:
        weights = step(*weights)
    return _build(model, weights, "process_weights(...)")


def _state_of(model: HookedTransformer) -> StateDict:
    return {k: v.detach() for k, v in model.state_dict().items()}


def _build(like: HookedTransformer, weights: Weights, source: str) -> HookedTransformer:
    """A ``HookedTransformer`` for ``weights`` with ``like``'s tokenizer, dtype, device and mode.

    The skeleton is built on the meta device (no random init: that would dominate the cost on a real
    model) and the weights are assigned as fresh copies, so the new model shares no storage with ``like``.
    """
    from mechscope.models.transformer import HookedTransformer

    with torch.device("meta"):
        new = HookedTransformer(weights.cfg, tokenizer=like.tokenizer)
    own = {k: v.shape for k, v in new.state_dict().items()}
    got = {k: v.shape for k, v in weights.state.items()}
    if own != got:
        diff = sorted(set(own) ^ set(got)) + sorted(k for k in own if k in got and own[k] != got[k])
        raise ConfigError(f"{source} produced weights that do not fit its config (keys/shapes differ: {diff[:5]})")
    first = next(like.parameters())
    state = {k: v.to(device=first.device, dtype=first.dtype, copy=True) for k, v in weights.state.items()}
    new.load_state_dict(state, strict=True, assign=True)
    new.train(like.training)
    return new


# aliases: process_weights' keyword arguments shadow the transform names inside its body
_FOLD_LN, _CENTER_WRITING = fold_layer_norm, center_writing_weights
_CENTER_UNEMBED, _FOLD_VALUE_BIASES = center_unembed, fold_value_biases
