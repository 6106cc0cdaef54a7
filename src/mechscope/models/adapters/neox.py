"""GPT-NeoX / Pythia: LayerNorm, partial rotary, parallel attention + MLP, fused QKV interleaved per head."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from mechscope.errors import ConfigError
from mechscope.models.adapters.base import ActivationRule as A
from mechscope.models.adapters.base import Adapter, ident, out_proj_to_heads, transpose
from mechscope.models.adapters.base import WeightRule as R
from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig, PositionalConfig


def config_from_hf(c: dict[str, Any]) -> ModelConfig:
    """Our config from a transformers GPTNeoXConfig dict."""
    d, h = c["hidden_size"], c["num_attention_heads"]
    e = d // h
    rope = c.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise ConfigError(f"rope_type {rope.get('rope_type')!r} is not supported for gpt_neox")
    frac = float(rope.get("partial_rotary_factor", c.get("rotary_pct", 0.25)))
    base = float(rope.get("rope_theta", c.get("rotary_emb_base", 10000.0)))
    act = c.get("hidden_act", "gelu")
    if act not in ("gelu", "gelu_new", "relu", "gelu_fast"):
        raise ConfigError(f"unsupported gpt_neox hidden_act {act!r}")
    bias = bool(c.get("attention_bias", True))
    return ModelConfig(
        d_model=d, n_layers=c["num_hidden_layers"], d_vocab=c["vocab_size"], n_ctx=c["max_position_embeddings"],
        attention=AttentionConfig(n_heads=h, d_head=e, qkv_bias=bias, out_bias=bias),
        mlp=MLPConfig(d_mlp=c["intermediate_size"], act=act, bias=True),
        norm=NormConfig(kind="layernorm", eps=float(c.get("layer_norm_eps", 1e-5))),
        positional=PositionalConfig(kind="rotary", rotary_dim=int(e * frac), rotary_base=base),
        parallel_attn_mlp=bool(c.get("use_parallel_residual", True)),
        name=str(c.get("_name_or_path") or "gpt_neox"), architecture="gpt_neox")


def _split_qkv_w(t: Tensor, cfg: ModelConfig) -> tuple[Tensor, ...]:
    """query_key_value.weight [(heads 3 d_head) d_model] -> W_Q, W_K, W_V [heads d_model d_head]."""
    w = t.view(cfg.n_heads, 3, cfg.d_head, cfg.d_model)
    return tuple(w[:, i].transpose(1, 2) for i in range(3))


def _split_qkv_b(t: Tensor, cfg: ModelConfig) -> tuple[Tensor, ...]:
    b = t.view(cfg.n_heads, 3, cfg.d_head)
    return tuple(b[:, i] for i in range(3))


_P = "gpt_neox.layers.{L}."
_LAYER = (
    R(("blocks.{L}.ln1.w",), _P + "input_layernorm.weight", ident),
    R(("blocks.{L}.ln1.b",), _P + "input_layernorm.bias", ident),
    R(("blocks.{L}.ln2.w",), _P + "post_attention_layernorm.weight", ident),
    R(("blocks.{L}.ln2.b",), _P + "post_attention_layernorm.bias", ident),
    R(("blocks.{L}.attn.W_Q", "blocks.{L}.attn.W_K", "blocks.{L}.attn.W_V"), _P + "attention.query_key_value.weight",
      _split_qkv_w),
    R(("blocks.{L}.attn.b_Q", "blocks.{L}.attn.b_K", "blocks.{L}.attn.b_V"), _P + "attention.query_key_value.bias",
      _split_qkv_b, optional=True),
    R(("blocks.{L}.attn.W_O",), _P + "attention.dense.weight", out_proj_to_heads),
    R(("blocks.{L}.attn.b_O",), _P + "attention.dense.bias", ident, optional=True),
    R(("blocks.{L}.mlp.W_in",), _P + "mlp.dense_h_to_4h.weight", transpose),
    R(("blocks.{L}.mlp.b_in",), _P + "mlp.dense_h_to_4h.bias", ident),
    R(("blocks.{L}.mlp.W_out",), _P + "mlp.dense_4h_to_h.weight", transpose),
    R(("blocks.{L}.mlp.b_out",), _P + "mlp.dense_4h_to_h.bias", ident),
)
_GLOBAL = (
    R(("embed.W_E",), "gpt_neox.embed_in.weight", ident),
    R(("ln_final.w",), "gpt_neox.final_layer_norm.weight", ident),
    R(("ln_final.b",), "gpt_neox.final_layer_norm.bias", ident),
    R(("unembed.W_U",), "gpt_neox.embed_in.weight", transpose, optional=True),  # tied (rare)
    R(("unembed.W_U",), "embed_out.weight", transpose, optional=True),  # older transformers
    R(("unembed.W_U",), "lm_head.weight", transpose, optional=True),
)
_ACTS = (
    A("blocks.{L}.hook_resid_pre", "gpt_neox.layers.{L}", "in"),
    A("blocks.{L}.hook_attn_out", "gpt_neox.layers.{L}.attention", "out"),
    A("blocks.{L}.hook_mlp_out", "gpt_neox.layers.{L}.mlp", "out"),
    A("blocks.{L}.attn.hook_z", "gpt_neox.layers.{L}.attention.dense", "in", "heads"),
    A("blocks.{L}.mlp.hook_post", "gpt_neox.layers.{L}.mlp.dense_4h_to_h", "in"),
    A("blocks.{L}.mlp.hook_pre", "gpt_neox.layers.{L}.mlp.dense_h_to_4h", "out"),
)


def adapter(model_type: str = "gpt_neox") -> Adapter:
    """The GPT-NeoX adapter."""
    return Adapter(family="gpt_neox", config_from_hf=config_from_hf, global_rules=_GLOBAL, layer_rules=_LAYER,
                   activation_rules=_ACTS)
