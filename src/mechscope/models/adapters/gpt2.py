"""GPT-2: LayerNorm, learned positions, GELU (tanh approximation), fused QKV in Conv1D layout [in out]."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from mechscope.errors import ConfigError
from mechscope.models.adapters.base import ActivationRule as A
from mechscope.models.adapters.base import Adapter, ident, transpose
from mechscope.models.adapters.base import WeightRule as R
from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig, PositionalConfig


def config_from_hf(c: dict[str, Any]) -> ModelConfig:
    """Our config from a transformers GPT2Config dict."""
    if c.get("scale_attn_by_inverse_layer_idx") or c.get("reorder_and_upcast_attn"):
        raise ConfigError("GPT-2 variants with scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported")
    if not c.get("scale_attn_weights", True):
        raise ConfigError("GPT-2 with scale_attn_weights=False is not supported")
    d, h = c["n_embd"], c["n_head"]
    act = c.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu", "relu", "gelu_fast"):
        raise ConfigError(f"unsupported GPT-2 activation_function {act!r}")
    return ModelConfig(
        d_model=d, n_layers=c["n_layer"], d_vocab=c["vocab_size"], n_ctx=c["n_positions"],
        attention=AttentionConfig(n_heads=h, d_head=d // h, qkv_bias=True, out_bias=True),
        mlp=MLPConfig(d_mlp=c.get("n_inner") or 4 * d, act=act, bias=True),
        norm=NormConfig(kind="layernorm", eps=float(c.get("layer_norm_epsilon", 1e-5))),
        positional=PositionalConfig(kind="learned"), name=str(c.get("_name_or_path") or "gpt2"),
        architecture="gpt2")


def _split_qkv_w(t: Tensor, cfg: ModelConfig) -> tuple[Tensor, ...]:
    """c_attn.weight [d_model 3*d_model] -> W_Q, W_K, W_V [heads d_model d_head]."""
    return tuple(w.reshape(cfg.d_model, cfg.n_heads, cfg.d_head).permute(1, 0, 2) for w in t.chunk(3, dim=1))


def _split_qkv_b(t: Tensor, cfg: ModelConfig) -> tuple[Tensor, ...]:
    return tuple(b.reshape(cfg.n_heads, cfg.d_head) for b in t.chunk(3))


def _proj_to_heads(t: Tensor, cfg: ModelConfig) -> Tensor:
    """c_proj.weight [heads*d_head d_model] (Conv1D) -> W_O [heads d_head d_model]."""
    return t.reshape(cfg.n_heads, cfg.d_head, cfg.d_model)


_P = "transformer.h.{L}."
_LAYER = (
    R(("blocks.{L}.ln1.w",), _P + "ln_1.weight", ident), R(("blocks.{L}.ln1.b",), _P + "ln_1.bias", ident),
    R(("blocks.{L}.ln2.w",), _P + "ln_2.weight", ident), R(("blocks.{L}.ln2.b",), _P + "ln_2.bias", ident),
    R(("blocks.{L}.attn.W_Q", "blocks.{L}.attn.W_K", "blocks.{L}.attn.W_V"), _P + "attn.c_attn.weight", _split_qkv_w),
    R(("blocks.{L}.attn.b_Q", "blocks.{L}.attn.b_K", "blocks.{L}.attn.b_V"), _P + "attn.c_attn.bias", _split_qkv_b),
    R(("blocks.{L}.attn.W_O",), _P + "attn.c_proj.weight", _proj_to_heads),
    R(("blocks.{L}.attn.b_O",), _P + "attn.c_proj.bias", ident),
    R(("blocks.{L}.mlp.W_in",), _P + "mlp.c_fc.weight", ident), R(("blocks.{L}.mlp.b_in",), _P + "mlp.c_fc.bias", ident),
    R(("blocks.{L}.mlp.W_out",), _P + "mlp.c_proj.weight", ident),
    R(("blocks.{L}.mlp.b_out",), _P + "mlp.c_proj.bias", ident),
)
_GLOBAL = (
    R(("embed.W_E",), "transformer.wte.weight", ident), R(("pos_embed.W_pos",), "transformer.wpe.weight", ident),
    R(("ln_final.w",), "transformer.ln_f.weight", ident), R(("ln_final.b",), "transformer.ln_f.bias", ident),
    R(("unembed.W_U",), "transformer.wte.weight", transpose),
    R(("unembed.W_U",), "lm_head.weight", transpose, optional=True),
)
_ACTS = (
    A("blocks.{L}.hook_resid_pre", "transformer.h.{L}", "in"),
    A("blocks.{L}.hook_attn_out", "transformer.h.{L}.attn", "out"),
    A("blocks.{L}.hook_mlp_out", "transformer.h.{L}.mlp", "out"),
    A("blocks.{L}.attn.hook_z", "transformer.h.{L}.attn.c_proj", "in", "heads"),
    A("blocks.{L}.mlp.hook_post", "transformer.h.{L}.mlp.c_proj", "in"),
    A("blocks.{L}.mlp.hook_pre", "transformer.h.{L}.mlp.c_fc", "out"),
)


def adapter(model_type: str = "gpt2") -> Adapter:
    """The GPT-2 adapter."""
    return Adapter(family="gpt2", config_from_hf=config_from_hf, global_rules=_GLOBAL, layer_rules=_LAYER,
                   activation_rules=_ACTS)
