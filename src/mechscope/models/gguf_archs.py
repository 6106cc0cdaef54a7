"""The GGUF architectures mechscope reads: one ``GGUFArch`` entry each, in the ``ARCHITECTURES`` registry.

An entry says how llama.cpp's converter (``convert_hf_to_gguf.py``) laid a transformers checkpoint out, so
that :func:`mechscope.models.gguf.read_gguf` can undo it into transformers names and values:

* ``block_names``: GGUF block tensor (``attn_q``...) -> transformers module (``self_attn.q_proj``...);
* ``permute_qk``: the converter interleaved the rows of ``W_Q``/``W_K`` within each head (``llama`` only:
  llama.cpp runs Llama in its "normal" rotary mode; Qwen and Gemma run in "NeoX" mode, rows unchanged);
* ``norm_offset``: the converter added this to every norm weight (Gemma stores ``1 + w``, transformers ``w``);
* ``config``: the transformers config dict built from the ``<arch>.*`` metadata, with llama.cpp's defaults
  for what the file leaves out (e.g. Gemma 3's sliding-window pattern and local RoPE theta).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mechscope.errors import ModelFileError

_LLAMA_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_QK_NORMS = {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
_GEMMA3_BLOCK = {
    **_LLAMA_BLOCK,
    **_QK_NORMS,
    "post_attention_norm": "post_attention_layernorm",  # Gemma's name for the attention output's norm
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}

ConfigFn = Callable[[str, Mapping[str, Any], Mapping[str, Any], Path], dict[str, Any]]


@dataclass(frozen=True)
class GGUFArch:
    """How one GGUF ``general.architecture`` maps onto a transformers model (see the module docstring)."""

    model_type: str
    """The transformers ``model_type`` of the converted config (selects mechscope's adapter)."""
    hf_class: str
    """The transformers class name recorded in ``architectures``."""
    block_names: Mapping[str, str]
    """GGUF block tensor name -> transformers module name within ``model.layers.{i}``."""
    config: ConfigFn
    """``(prefix, metadata, tensors, path) -> extra config keys`` beyond the shared ones."""
    permute_qk: bool = False
    """Undo llama.cpp's per-head row interleaving of ``W_Q``/``W_K``."""
    norm_offset: float = 0.0
    """Subtracted from every ``*norm.weight`` (what the converter added)."""


def meta(metadata: Mapping[str, Any], key: str, path: Path, default: Any = None) -> Any:
    """A required (``default is None``) or optional metadata value."""
    if key in metadata:
        return metadata[key]
    if default is None:
        raise ModelFileError(f"{path}: GGUF metadata key {key!r} is missing; the file is incomplete.")
    return default


def f32(value: Any) -> float:
    """A float32 metadata value as the shortest decimal that rounds to it (1e-05, not 9.9999997e-06)."""
    return float(str(np.float32(value)))


def _rope_scaling(a: str, metadata: Mapping[str, Any], path: Path) -> dict[str, Any] | None:
    """transformers' ``rope_scaling`` from GGUF ``rope.scaling.*`` keys (None, or linear scaling)."""
    kind = metadata.get(a + "rope.scaling.type", "none")
    if kind in ("none", None):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": f32(meta(metadata, a + "rope.scaling.factor", path))}
    raise ModelFileError(f"{path}: RoPE scaling {kind!r} is not supported; supported: none, linear.")


def _llama(a: str, metadata: Mapping[str, Any], tensors: Mapping[str, Any], path: Path) -> dict[str, Any]:
    head_dim = int(meta(metadata, a + "attention.key_length", path,
                        int(meta(metadata, a + "embedding_length", path)) // int(meta(metadata, a + "attention.head_count", path))))
    rot_dim = int(meta(metadata, a + "rope.dimension_count", path, head_dim))
    if rot_dim != head_dim:
        raise ModelFileError(
            f"{path}: rope.dimension_count={rot_dim} differs from head_dim={head_dim}; partial rotary is not "
            "part of the llama architecture and is not supported."
        )
    if "rope_freqs.weight" in tensors:
        raise ModelFileError(
            f"{path}: the file has a rope_freqs tensor (Llama-3.1-style RoPE frequency scaling), which "
            "mechscope does not support; supported: plain RoPE, optionally with linear scaling."
        )
    return {"rope_scaling": _rope_scaling(a, metadata, path), "attention_bias": "blk.0.attn_q.bias" in tensors,
            "mlp_bias": False, "hidden_act": "silu"}


def _qwen(a: str, metadata: Mapping[str, Any], tensors: Mapping[str, Any], path: Path) -> dict[str, Any]:
    if "rope_freqs.weight" in tensors or metadata.get(a + "rope.scaling.type", "none") not in ("none", None):
        raise ModelFileError(f"{path}: RoPE scaling (rope_freqs / rope.scaling.*) is not supported; plain RoPE only.")
    return {"attention_bias": "blk.0.attn_q.bias" in tensors, "hidden_act": "silu", "use_sliding_window": False}


def _gemma3(a: str, metadata: Mapping[str, Any], tensors: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Gemma 3, with llama.cpp's defaults for what converters leave out: full attention every 6th layer,
    local RoPE theta 10 000, and the query scale 1/sqrt(head_dim) (1/sqrt(d_model/n_heads) for the 62-layer
    27B model) unless ``attention.scale`` is given."""
    n_layers = int(meta(metadata, a + "block_count", path))
    d, heads = int(meta(metadata, a + "embedding_length", path)), int(meta(metadata, a + "attention.head_count", path))
    head_dim = int(meta(metadata, a + "attention.key_length", path, 256))
    pattern = metadata.get(a + "attention.sliding_window_pattern", 6)
    if isinstance(pattern, list):  # one bool per layer, True = sliding window
        if len(pattern) != n_layers:
            raise ModelFileError(f"{path}: sliding_window_pattern has {len(pattern)} entries for {n_layers} layers.")
        layer_types = ["sliding_attention" if p else "full_attention" for p in pattern]
    else:
        layer_types = ["full_attention" if (i + 1) % int(pattern) == 0 else "sliding_attention" for i in range(n_layers)]
    if a + "attention.scale" in metadata:
        scalar = float(metadata[a + "attention.scale"]) ** -2
    else:
        scalar = float(d // heads if n_layers == 62 else head_dim)
    return {
        "rope_parameters": {
            "full_attention": {"rope_type": "default",
                               "rope_theta": f32(meta(metadata, a + "rope.freq_base", path, 1_000_000.0))},
            "sliding_attention": {"rope_type": "default",
                                  "rope_theta": f32(meta(metadata, a + "rope.freq_base_swa", path, 10_000.0))},
        },
        "rope_scaling": _rope_scaling(a, metadata, path),
        "sliding_window": int(meta(metadata, a + "attention.sliding_window", path)),
        "layer_types": layer_types,
        "query_pre_attn_scalar": scalar,
        "hidden_activation": "gelu_pytorch_tanh",
        "final_logit_softcapping": metadata.get(a + "final_logit_softcapping"),
        "attn_logit_softcapping": metadata.get(a + "attn_logit_softcapping"),
    }


ARCHITECTURES: dict[str, GGUFArch] = {
    "llama": GGUFArch("llama", "LlamaForCausalLM", _LLAMA_BLOCK, _llama, permute_qk=True),
    "qwen2": GGUFArch("qwen2", "Qwen2ForCausalLM", _LLAMA_BLOCK, _qwen),
    "qwen3": GGUFArch("qwen3", "Qwen3ForCausalLM", {**_LLAMA_BLOCK, **_QK_NORMS}, _qwen),
    "gemma3": GGUFArch("gemma3_text", "Gemma3ForCausalLM", _GEMMA3_BLOCK, _gemma3, norm_offset=1.0),
}
"""GGUF ``general.architecture`` -> its layout (the registry ``read_gguf`` dispatches on)."""


def base_config(arch: str, metadata: Mapping[str, Any], tensors: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The transformers config dict of a GGUF file of a registered architecture, checked against its tensors."""
    spec = ARCHITECTURES[arch]
    a = arch + "."
    d_model = int(meta(metadata, a + "embedding_length", path))
    n_heads = int(meta(metadata, a + "attention.head_count", path))
    if "token_embd.weight" not in tensors:
        raise ModelFileError(f"{path}: tensor 'token_embd.weight' is missing; the file is incomplete.")
    vocab = int(tensors["token_embd.weight"].shape[-1])  # GGUF lists dims innermost first
    config: dict[str, Any] = {
        "architectures": [spec.hf_class],
        "model_type": spec.model_type,
        "hidden_size": d_model,
        "intermediate_size": int(meta(metadata, a + "feed_forward_length", path)),
        "num_hidden_layers": int(meta(metadata, a + "block_count", path)),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(meta(metadata, a + "attention.head_count_kv", path, n_heads)),
        "head_dim": int(meta(metadata, a + "attention.key_length", path, d_model // n_heads)),
        "vocab_size": vocab,
        "max_position_embeddings": int(meta(metadata, a + "context_length", path, 2048)),
        "rms_norm_eps": f32(meta(metadata, a + "attention.layer_norm_rms_epsilon", path, 1e-5)),
        "rope_theta": f32(meta(metadata, a + "rope.freq_base", path, 10000.0)),
        "tie_word_embeddings": "output.weight" not in tensors,
    }
    config |= spec.config(a, metadata, tensors, path)
    for name in ("bos", "eos", "padding"):
        key = f"tokenizer.ggml.{name}_token_id"
        if key in metadata:
            config["pad_token_id" if name == "padding" else f"{name}_token_id"] = int(metadata[key])
    declared = metadata.get(a + "vocab_size")
    if declared is not None and int(declared) != vocab:
        raise ModelFileError(f"{path}: {arch}.vocab_size={declared} but token_embd has {vocab} rows.")
    return config


def expected_shapes(config: Mapping[str, Any], block_names: Mapping[str, str],
                    biases: frozenset[str] = frozenset()) -> dict[str, tuple[int, ...]]:
    """Every transformers parameter name -> shape for a config dict and an architecture's block tensors
    (``biases``: the projections, among q/k/v/o, that carry a bias)."""
    d, h, kv, dh = (config[k] for k in ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim"))
    mlp, vocab = config["intermediate_size"], config["vocab_size"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,)}
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (vocab, d)
    module_shapes = {
        "self_attn.q_proj": (h * dh, d), "self_attn.k_proj": (kv * dh, d), "self_attn.v_proj": (kv * dh, d),
        "self_attn.o_proj": (d, h * dh), "self_attn.q_norm": (dh,), "self_attn.k_norm": (dh,),
        "mlp.gate_proj": (mlp, d), "mlp.up_proj": (mlp, d), "mlp.down_proj": (d, mlp),
    }
    per_layer = {f"{m}.weight": module_shapes.get(m, (d,)) for m in block_names.values()}  # (d,): the norms
    per_layer |= {f"self_attn.{p}_proj.bias": (n * dh if p != "o" else d,)
                  for p, n in (("q", h), ("k", kv), ("v", kv), ("o", h)) if p in biases}
    for i in range(config["num_hidden_layers"]):
        shapes |= {f"model.layers.{i}.{k}": v for k, v in per_layer.items()}
    return shapes
