"""Llama family (Llama, SmolLM2, Qwen2, Qwen3, Mistral): RMSNorm, rotary, SwiGLU, grouped-query attention.

Tied embeddings are copied into ``W_U``. Qwen2 has Q/K/V biases but no output bias; Llama's
``attention_bias`` covers all four (and Qwen3's); Qwen3 normalises each query/key head (``q_norm``/``k_norm``,
before the rotary positions). The per-type differences are the ``_VARIANTS`` table. Rope scaling variants (llama3, yarn...) are refused rather than
silently computed wrong; Mistral's sliding window is honoured by capping ``n_ctx`` at the window.
"""

from __future__ import annotations

from typing import Any

from mechscope.errors import ConfigError
from mechscope.models.adapters.base import (
    ActivationRule as A,
)
from mechscope.models.adapters.base import (
    Adapter,
    bias_to_heads,
    ident,
    kv_heads,
    linear_to_heads,
    out_proj_to_heads,
    q_heads,
    transpose,
)
from mechscope.models.adapters.base import WeightRule as R
from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig, PositionalConfig


def _rope_theta(c: dict[str, Any]) -> float:
    params = c.get("rope_parameters") or c.get("rope_scaling") or {}
    rtype = params.get("rope_type", params.get("type", "default"))
    if rtype not in ("default", None):
        raise ConfigError(f"rope_type {rtype!r} is not supported yet (only default RoPE); refusing to load "
                          "a model whose numbers would differ from the source")
    return float(params.get("rope_theta", c.get("rope_theta", 10000.0)))


_VARIANTS: dict[str, dict[str, bool]] = {
    "qwen2": {"qkv_bias": True, "out_bias": False},
    "qwen3": {"qk_norm": True},
}
"""model_type -> AttentionConfig fields fixed by the family (the rest come from the config dict)."""


def config_from_hf(c: dict[str, Any], model_type: str) -> ModelConfig:
    """Our config from a transformers Llama/Qwen2/Qwen3/Mistral config dict."""
    n_heads = c["num_attention_heads"]
    d_head = c.get("head_dim") or c["hidden_size"] // n_heads
    bias = bool(c.get("attention_bias", False))
    attn = {"qkv_bias": bias, "out_bias": bias, **_VARIANTS.get(model_type, {})}
    n_ctx = int(c.get("max_position_embeddings", 2048))
    window = c.get("sliding_window")
    if window and (model_type == "mistral" or c.get("use_sliding_window")):
        n_ctx = min(n_ctx, int(window))
    return ModelConfig(
        d_model=c["hidden_size"], n_layers=c["num_hidden_layers"], d_vocab=c["vocab_size"], n_ctx=n_ctx,
        attention=AttentionConfig(n_heads=n_heads, d_head=d_head, n_kv_heads=c.get("num_key_value_heads") or n_heads,
                                  **attn),
        mlp=MLPConfig(kind="gated", d_mlp=c["intermediate_size"], act=_act(c.get("hidden_act", "silu")),
                      bias=bool(c.get("mlp_bias", False))),
        norm=NormConfig(kind="rmsnorm", eps=float(c.get("rms_norm_eps", 1e-6))),
        positional=PositionalConfig(kind="rotary", rotary_base=_rope_theta(c)),
        name=str(c.get("_name_or_path") or model_type), architecture=model_type,
    )


def _act(name: str) -> Any:
    if name not in ("silu", "gelu", "relu", "gelu_new"):
        raise ConfigError(f"unsupported hidden_act {name!r} for the llama family")
    return name


_LAYER = (
    R(("blocks.{L}.ln1.w",), "model.layers.{L}.input_layernorm.weight", ident),
    R(("blocks.{L}.ln2.w",), "model.layers.{L}.post_attention_layernorm.weight", ident),
    R(("blocks.{L}.attn.W_Q",), "model.layers.{L}.self_attn.q_proj.weight", linear_to_heads(q_heads)),
    R(("blocks.{L}.attn.W_K",), "model.layers.{L}.self_attn.k_proj.weight", linear_to_heads(kv_heads)),
    R(("blocks.{L}.attn.W_V",), "model.layers.{L}.self_attn.v_proj.weight", linear_to_heads(kv_heads)),
    R(("blocks.{L}.attn.W_O",), "model.layers.{L}.self_attn.o_proj.weight", out_proj_to_heads),
    R(("blocks.{L}.attn.b_Q",), "model.layers.{L}.self_attn.q_proj.bias", bias_to_heads(q_heads), optional=True),
    R(("blocks.{L}.attn.b_K",), "model.layers.{L}.self_attn.k_proj.bias", bias_to_heads(kv_heads), optional=True),
    R(("blocks.{L}.attn.b_V",), "model.layers.{L}.self_attn.v_proj.bias", bias_to_heads(kv_heads), optional=True),
    R(("blocks.{L}.attn.b_O",), "model.layers.{L}.self_attn.o_proj.bias", ident, optional=True),
    R(("blocks.{L}.attn.q_norm.w",), "model.layers.{L}.self_attn.q_norm.weight", ident, optional=True),
    R(("blocks.{L}.attn.k_norm.w",), "model.layers.{L}.self_attn.k_norm.weight", ident, optional=True),
    R(("blocks.{L}.mlp.W_gate",), "model.layers.{L}.mlp.gate_proj.weight", transpose),
    R(("blocks.{L}.mlp.W_in",), "model.layers.{L}.mlp.up_proj.weight", transpose),
    R(("blocks.{L}.mlp.W_out",), "model.layers.{L}.mlp.down_proj.weight", transpose),
    R(("blocks.{L}.mlp.b_in",), "model.layers.{L}.mlp.up_proj.bias", ident, optional=True),
    R(("blocks.{L}.mlp.b_out",), "model.layers.{L}.mlp.down_proj.bias", ident, optional=True),
)

_GLOBAL = (
    R(("embed.W_E",), "model.embed_tokens.weight", ident),
    R(("ln_final.w",), "model.norm.weight", ident),
)

_ACTS = (
    A("blocks.{L}.hook_resid_pre", "model.layers.{L}", "in"),
    A("blocks.{L}.hook_attn_out", "model.layers.{L}.self_attn", "out"),
    A("blocks.{L}.hook_mlp_out", "model.layers.{L}.mlp", "out"),
    A("blocks.{L}.attn.hook_q", "model.layers.{L}.self_attn.q_proj", "out", "heads"),
    A("blocks.{L}.attn.hook_k", "model.layers.{L}.self_attn.k_proj", "out", "kv_heads"),
    A("blocks.{L}.attn.hook_v", "model.layers.{L}.self_attn.v_proj", "out", "kv_heads"),
    A("blocks.{L}.attn.hook_z", "model.layers.{L}.self_attn.o_proj", "in", "heads"),
    A("blocks.{L}.mlp.hook_post", "model.layers.{L}.mlp.down_proj", "in"),
    A("blocks.{L}.mlp.hook_pre", "model.layers.{L}.mlp.gate_proj", "out"),
    A("blocks.{L}.mlp.hook_pre_linear", "model.layers.{L}.mlp.up_proj", "out"),
)


def adapter(model_type: str) -> Adapter:
    """The Llama-family adapter for ``model_type`` (llama, qwen2, qwen3, mistral)."""
    lm_head = R(("unembed.W_U",), "lm_head.weight", transpose, optional=True)
    tied = R(("unembed.W_U",), "model.embed_tokens.weight", transpose)
    return Adapter(family=model_type, config_from_hf=lambda c: config_from_hf(c, model_type),
                   global_rules=(*_GLOBAL, tied, lm_head), layer_rules=_LAYER, activation_rules=_ACTS)
