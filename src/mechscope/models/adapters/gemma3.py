"""Gemma 3 text models (``Gemma3ForCausalLM``, model_type ``gemma3_text``).

What differs from Llama, each a config value of ours (never a branch in a component):

* **norms with a +1**: transformers' ``Gemma3RMSNorm`` multiplies by ``1 + weight``; our ``w`` is that
  product's factor, so the rules add 1 (a GGUF file already stores ``1 + weight``; see ``models/gguf.py``);
* **sandwich norms**: ``post_attention_layernorm`` / ``post_feedforward_layernorm`` normalise each sublayer's
  output (our ``ln1_post`` / ``ln2_post``, ``norm.post_sublayer``); the MLP's input norm is
  ``pre_feedforward_layernorm`` (our ``ln2``) — *not* ``post_attention_layernorm`` as in Llama;
* **q/k norms** over each head before the rotary positions (``attention.qk_norm``);
* **embedding scale** sqrt(d_model) on the token embeddings only (``embed_scale``; the tied unembedding
  is the unscaled matrix, copied into ``W_U``);
* **local and global layers**: a sliding window on every layer but each ``sliding_window_pattern``-th
  (``attention.sliding_window`` / ``global_every``), with RoPE theta 10 000 locally and ``rope_theta``
  globally (``positional.local_rotary_base``);
* **query scale** ``query_pre_attn_scalar ** -0.5`` instead of ``d_head ** -0.5`` (``attention.scale``);
* GELU with the tanh approximation (``gelu_pytorch_tanh`` = our ``gelu_new``).

Soft-capping of attention scores or logits (Gemma 2) and RoPE scaling are refused, not computed wrong.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from mechscope.errors import ConfigError
from mechscope.models.adapters.base import ActivationRule as A
from mechscope.models.adapters.base import (
    Adapter,
    ident,
    kv_heads,
    linear_to_heads,
    out_proj_to_heads,
    q_heads,
    transpose,
)
from mechscope.models.adapters.base import WeightRule as R
from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig, PositionalConfig

_ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_new", "gelu_new": "gelu_new", "gelu": "gelu"}


def _plus_one(t: Tensor, cfg: ModelConfig) -> Tensor:
    """Gemma's norm weight ``w`` -> the factor ``1 + w`` (computed in float32, as transformers does)."""
    return 1.0 + t.float()


def _rope(c: dict[str, Any]) -> tuple[float, float]:
    """(global theta, local theta) from ``rope_parameters`` (transformers 5) or the older flat keys."""
    params = c.get("rope_parameters") or {}
    out = []
    for kind, flat, default in (("full_attention", "rope_theta", 1_000_000.0),
                                ("sliding_attention", "rope_local_base_freq", 10_000.0)):
        p = params.get(kind) or {}
        rtype = p.get("rope_type", "default")
        if rtype != "default" or (kind == "full_attention" and c.get("rope_scaling")):
            raise ConfigError(f"Gemma 3 {kind} RoPE type {rtype!r} / rope_scaling {c.get('rope_scaling')!r} is not "
                              "supported (only default RoPE); refusing to load a model whose numbers would differ")
        out.append(float(p.get("rope_theta", c.get(flat, default))))
    return out[0], out[1]


def _global_every(c: dict[str, Any]) -> int | None:
    """The period of full-attention layers in ``layer_types`` (None: every layer local); refuses other patterns."""
    n = int(c["num_hidden_layers"])
    types = c.get("layer_types")
    if types is None:
        pattern = int(c.get("sliding_window_pattern", 6))
        types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n)]
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    if not full:
        return None
    period = full[0] + 1
    expected = [i for i in range(n) if (i + 1) % period == 0]
    if full != expected or any(t not in ("full_attention", "sliding_attention") for t in types):
        raise ConfigError(f"Gemma 3 layer_types {types} are not 'full attention every N-th layer'; not supported")
    return period


def config_from_hf(c: dict[str, Any]) -> ModelConfig:
    """Our config from a transformers ``Gemma3TextConfig`` dict."""
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if c.get(key) is not None:
            raise ConfigError(f"Gemma 3 config has {key}={c[key]}; soft-capping is not supported")
    if c.get("use_bidirectional_attention"):
        raise ConfigError("Gemma 3 config has use_bidirectional_attention=True; only causal models are supported")
    act = c.get("hidden_activation") or c.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in _ACTIVATIONS:
        raise ConfigError(f"unsupported Gemma 3 hidden_activation {act!r}; supported: {sorted(_ACTIVATIONS)}")
    n_heads, d = int(c["num_attention_heads"]), int(c["hidden_size"])
    d_head = int(c.get("head_dim") or d // n_heads)
    global_theta, local_theta = _rope(c)
    window = c.get("sliding_window")
    return ModelConfig(
        d_model=d, n_layers=int(c["num_hidden_layers"]), d_vocab=int(c["vocab_size"]),
        n_ctx=int(c.get("max_position_embeddings", 32768)),
        attention=AttentionConfig(n_heads=n_heads, d_head=d_head, n_kv_heads=int(c.get("num_key_value_heads") or n_heads),
                                  qkv_bias=bool(c.get("attention_bias", False)),
                                  out_bias=bool(c.get("attention_bias", False)),
                                  scale=float(c.get("query_pre_attn_scalar", 256)) ** -0.5, qk_norm=True,
                                  sliding_window=int(window) if window else None,
                                  global_every=_global_every(c) if window else None),
        mlp=MLPConfig(kind="gated", d_mlp=int(c["intermediate_size"]), act=_ACTIVATIONS[act]),  # type: ignore[arg-type]
        norm=NormConfig(kind="rmsnorm", eps=float(c.get("rms_norm_eps", 1e-6)), post_sublayer=True),
        positional=PositionalConfig(kind="rotary", rotary_base=global_theta,
                                    local_rotary_base=local_theta if window else None),
        embed_scale=d ** 0.5,
        name=str(c.get("_name_or_path") or "gemma3"), architecture="gemma3",
    )


_P = "model.layers.{L}."
_LAYER = (
    R(("blocks.{L}.ln1.w",), _P + "input_layernorm.weight", _plus_one),
    R(("blocks.{L}.ln1_post.w",), _P + "post_attention_layernorm.weight", _plus_one),
    R(("blocks.{L}.ln2.w",), _P + "pre_feedforward_layernorm.weight", _plus_one),
    R(("blocks.{L}.ln2_post.w",), _P + "post_feedforward_layernorm.weight", _plus_one),
    R(("blocks.{L}.attn.q_norm.w",), _P + "self_attn.q_norm.weight", _plus_one),
    R(("blocks.{L}.attn.k_norm.w",), _P + "self_attn.k_norm.weight", _plus_one),
    R(("blocks.{L}.attn.W_Q",), _P + "self_attn.q_proj.weight", linear_to_heads(q_heads)),
    R(("blocks.{L}.attn.W_K",), _P + "self_attn.k_proj.weight", linear_to_heads(kv_heads)),
    R(("blocks.{L}.attn.W_V",), _P + "self_attn.v_proj.weight", linear_to_heads(kv_heads)),
    R(("blocks.{L}.attn.W_O",), _P + "self_attn.o_proj.weight", out_proj_to_heads),
    R(("blocks.{L}.mlp.W_gate",), _P + "mlp.gate_proj.weight", transpose),
    R(("blocks.{L}.mlp.W_in",), _P + "mlp.up_proj.weight", transpose),
    R(("blocks.{L}.mlp.W_out",), _P + "mlp.down_proj.weight", transpose),
)

_GLOBAL = (
    R(("embed.W_E",), "model.embed_tokens.weight", ident),
    R(("ln_final.w",), "model.norm.weight", _plus_one),
    R(("unembed.W_U",), "model.embed_tokens.weight", transpose),  # tied (Gemma 3 always ties)
    R(("unembed.W_U",), "lm_head.weight", transpose, optional=True),  # an untied head wins
)

_ACTS = (
    A("blocks.{L}.hook_resid_pre", _P[:-1], "in"),
    A("blocks.{L}.hook_attn_out", _P + "post_attention_layernorm", "out"),
    A("blocks.{L}.hook_mlp_out", _P + "post_feedforward_layernorm", "out"),
    A("blocks.{L}.attn.hook_q", _P + "self_attn.q_proj", "out", "heads"),
    A("blocks.{L}.attn.hook_k", _P + "self_attn.k_proj", "out", "kv_heads"),
    A("blocks.{L}.attn.hook_v", _P + "self_attn.v_proj", "out", "kv_heads"),
    A("blocks.{L}.attn.hook_z", _P + "self_attn.o_proj", "in", "heads"),
    A("blocks.{L}.mlp.hook_post", _P + "mlp.down_proj", "in"),
    A("blocks.{L}.mlp.hook_pre", _P + "mlp.gate_proj", "out"),
    A("blocks.{L}.mlp.hook_pre_linear", _P + "mlp.up_proj", "out"),
)


def adapter(model_type: str) -> Adapter:
    """The Gemma 3 text adapter."""
    return Adapter(family=model_type, config_from_hf=config_from_hf, global_rules=_GLOBAL, layer_rules=_LAYER,
                   activation_rules=_ACTS)
