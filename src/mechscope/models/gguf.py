"""Read a GGUF file (llama.cpp's format) into a transformers-named float state dict.

A GGUF file holds three things: metadata (architecture hyper-parameters under ``<arch>.*`` keys, the
tokenizer under ``tokenizer.ggml.*``), tensor descriptions, and (usually quantised) tensor data.
:func:`read_gguf` turns it into plain data mechscope's adapters already understand:

* ``hf_config``: a ``transformers.LlamaConfig``-style dict (``hidden_size``, ``num_hidden_layers``, ...);
* ``state_dict``: ``LlamaForCausalLM`` parameter names (``model.layers.3.self_attn.q_proj.weight``, ...),
  dequantised with ``gguf.quants.dequantize`` to float32;
* ``metadata``: every key-value field as Python values (the tokenizer is built from it by
  :meth:`mechscope.tokens.Tokenizer.from_gguf_metadata`, with
  :func:`mechscope.models.gguf_tokenizer.gguf_tokenizer`, re-exported here).

Why a permutation: llama.cpp's converter reorders the rows of ``W_Q`` and ``W_K`` within each head from
the "rotate-half" layout transformers uses (first half / second half of the head) to the interleaved
pairs its rotary kernel expects. We undo it exactly as ``convert_hf_to_gguf.py`` did it, so the weights
equal those of transformers' own GGUF loader (and of the original checkpoint, up to quantisation).

Only the ``llama`` GGUF architecture is supported (Llama 1/2, SmolLM, Mistral-as-llama, ...); other
architectures raise :class:`~mechscope.errors.ModelFileError` naming what is supported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mechscope.errors import ModelFileError
from mechscope.models.gguf_tokenizer import SUPPORTED_PRE_TOKENIZERS, gguf_add_bos, gguf_tokenizer

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "SUPPORTED_PRE_TOKENIZERS",
    "GGUFModel",
    "expected_llama_shapes",
    "gguf_add_bos",
    "gguf_tokenizer",
    "read_gguf",
    "read_gguf_metadata",
]

SUPPORTED_ARCHITECTURES = ("llama",)
"""GGUF ``general.architecture`` values :func:`read_gguf` converts."""

_GGUF_MAGIC = b"GGUF"

# GGUF tensor name -> transformers LlamaForCausalLM name ({i} = layer index).
_TOP_LEVEL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_NAMES = {
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
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
# Tensors llama.cpp writes that carry no parameter (precomputed rotary tables of old converters).
_IGNORED = re.compile(r"blk\.\d+\.attn_rot_embd|rope_freqs\.weight")


@dataclass(frozen=True, kw_only=True)
class GGUFModel:
    """The content of a GGUF file, converted to transformers conventions."""

    path: Path
    """The file that was read."""
    architecture: str
    """The GGUF ``general.architecture`` (always one of :data:`SUPPORTED_ARCHITECTURES`)."""
    hf_config: dict[str, Any]
    """A ``transformers.LlamaConfig``-style dict (``LlamaConfig(**hf_config)`` builds the config)."""
    state_dict: dict[str, torch.Tensor]
    """``LlamaForCausalLM`` parameter names -> dequantised tensors (no ``lm_head.weight`` when tied)."""
    metadata: dict[str, Any]
    """Every GGUF key-value field as a Python value (str, int, float, bool or list of those)."""
    tensor_types: dict[str, str]
    """transformers name -> the GGUF storage type it was dequantised from (``"Q4_1"``, ``"F32"``...)."""


def read_gguf(path: str | Path, *, dtype: torch.dtype = torch.float32) -> GGUFModel:
    """Read a ``llama``-architecture GGUF file: config, dequantised state dict and metadata.

    ``dtype`` is the dtype of the returned tensors (dequantisation itself is float32).
    Raises :class:`ModelFileError` for a missing, truncated or non-GGUF file, an unsupported architecture
    or tensors inconsistent with the metadata.
    """
    path = Path(path)
    reader = _open_reader(path)
    metadata = _read_metadata(reader, path)
    arch = metadata.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelFileError(
            f"{path}: GGUF architecture {arch!r} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)} "
            "(for other architectures load the file with transformers and use mechscope.from_hf)."
        )
    tensors = {t.name: t for t in reader.tensors}
    hf_config = _llama_config(metadata, tensors, path)
    state_dict, types = _llama_state_dict(tensors, hf_config, path, dtype)
    return GGUFModel(
        path=path,
        architecture=str(arch),
        hf_config=hf_config,
        state_dict=state_dict,
        metadata=metadata,
        tensor_types=types,
    )


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """Only the key-value metadata of a GGUF file (no tensor is dequantised)."""
    path = Path(path)
    return _read_metadata(_open_reader(path), path)


def _open_reader(path: Path) -> Any:
    """A ``gguf.GGUFReader`` on ``path``, with every way the file can be bad turned into ModelFileError."""
    from gguf import GGUFReader

    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise ModelFileError(f"GGUF file {path} {what}.")
    size = path.stat().st_size
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != _GGUF_MAGIC:
        raise ModelFileError(
            f"{path} is not a GGUF file: it starts with {magic!r}, a GGUF file starts with {_GGUF_MAGIC!r}."
        )
    try:
        reader = GGUFReader(path, "r")
    except Exception as e:  # the reader raises ValueError/IndexError/... on short or garbled data
        raise ModelFileError(
            f"{path} is a truncated or corrupted GGUF file ({size} bytes): {type(e).__name__}: {e}"
        ) from e
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size:
            raise ModelFileError(
                f"{path} is truncated: tensor {t.name!r} needs bytes up to {end}, the file has {size}."
            )
    return reader


def _read_metadata(reader: Any, path: Path) -> dict[str, Any]:
    """All key-value fields as Python values."""
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        try:
            value = field.contents()
        except Exception as e:
            raise ModelFileError(f"{path}: unreadable metadata field {key!r}: {e}") from e
        if isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def _meta(metadata: Mapping[str, Any], key: str, path: Path, default: Any = None) -> Any:
    """A required (``default is None``) or optional metadata value."""
    if key in metadata:
        return metadata[key]
    if default is None:
        raise ModelFileError(f"{path}: GGUF metadata key {key!r} is missing; the file is incomplete.")
    return default


def _llama_config(metadata: Mapping[str, Any], tensors: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The LlamaConfig-style dict of a ``llama`` GGUF file, checked against the tensor shapes."""
    a = "llama."
    d_model = int(_meta(metadata, a + "embedding_length", path))
    n_heads = int(_meta(metadata, a + "attention.head_count", path))
    n_kv = int(_meta(metadata, a + "attention.head_count_kv", path, n_heads))
    head_dim = int(_meta(metadata, a + "attention.key_length", path, d_model // n_heads))
    rot_dim = int(_meta(metadata, a + "rope.dimension_count", path, head_dim))
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
    if "token_embd.weight" not in tensors:
        raise ModelFileError(f"{path}: tensor 'token_embd.weight' is missing; the file is incomplete.")
    vocab = int(tensors["token_embd.weight"].shape[-1])  # GGUF lists dims innermost first
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": d_model,
        "intermediate_size": int(_meta(metadata, a + "feed_forward_length", path)),
        "num_hidden_layers": int(_meta(metadata, a + "block_count", path)),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "vocab_size": vocab,
        "max_position_embeddings": int(_meta(metadata, a + "context_length", path, 2048)),
        "rms_norm_eps": _f32(_meta(metadata, a + "attention.layer_norm_rms_epsilon", path, 1e-5)),
        "rope_theta": _f32(_meta(metadata, a + "rope.freq_base", path, 10000.0)),
        "rope_scaling": _rope_scaling(metadata, path),
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "mlp_bias": False,
        "hidden_act": "silu",
    }
    for name in ("bos", "eos", "padding"):
        key = f"tokenizer.ggml.{name}_token_id"
        if key in metadata:
            config["pad_token_id" if name == "padding" else f"{name}_token_id"] = int(metadata[key])
    declared = metadata.get(a + "vocab_size")
    if declared is not None and int(declared) != vocab:
        raise ModelFileError(f"{path}: llama.vocab_size={declared} but token_embd has {vocab} rows.")
    return config


def _f32(value: Any) -> float:
    """A float32 metadata value as the shortest decimal that rounds to it (1e-05, not 9.9999997e-06)."""
    return float(str(np.float32(value)))


def _rope_scaling(metadata: Mapping[str, Any], path: Path) -> dict[str, Any] | None:
    """transformers' ``rope_scaling`` from GGUF ``rope.scaling.*`` keys (None, or linear scaling)."""
    kind = metadata.get("llama.rope.scaling.type", "none")
    if kind in ("none", None):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": _f32(_meta(metadata, "llama.rope.scaling.factor", path))}
    raise ModelFileError(f"{path}: RoPE scaling {kind!r} is not supported; supported: none, linear.")


def _hf_name(gguf_name: str) -> str | None:
    """The transformers name of a GGUF tensor name (None for tensors that carry no parameter)."""
    if _IGNORED.fullmatch(gguf_name):
        return None
    top, _, kind = gguf_name.rpartition(".")
    if top in _TOP_LEVEL_NAMES:
        return f"{_TOP_LEVEL_NAMES[top]}.{kind}"
    m = _BLOCK_RE.fullmatch(gguf_name)
    if m and m.group(2) in _BLOCK_NAMES:
        return f"model.layers.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}.{m.group(3)}"
    return ""


def _unpermute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head row interleaving of W_Q / W_K (or their biases).

    llama.cpp stored rows as ``[head, dim/2, 2]`` (pairs); transformers wants ``[head, 2, dim/2]``.
    """
    dim = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, dim, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _dequantize(t: Any, path: Path) -> np.ndarray:
    """The float32 values of a GGUF tensor, shaped in numpy order (rows = output features)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    try:
        w = dequantize(t.data, t.tensor_type)
    except NotImplementedError as e:
        raise ModelFileError(f"{path}: tensor {t.name!r} has storage type {t.tensor_type.name}: {e}") from e
    if t.tensor_type == GGMLQuantizationType.F32:
        w = np.array(w, copy=True)  # the reader's memmap is read-only; tensors must be writable
    return w.reshape(tuple(int(n) for n in reversed(t.shape)))


def _llama_state_dict(
    tensors: Mapping[str, Any], config: Mapping[str, Any], path: Path, dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Dequantise and rename every tensor; check names and shapes against the config."""
    state: dict[str, torch.Tensor] = {}
    types: dict[str, str] = {}
    heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}
    for gguf_name, t in tensors.items():
        name = _hf_name(gguf_name)
        if name is None:
            continue
        if not name:
            raise ModelFileError(f"{path}: unexpected tensor {gguf_name!r} for the llama architecture.")
        w = _dequantize(t, path)
        proj = name.rsplit(".", 2)[-2]
        if proj in heads:
            w = _unpermute_rotary(w, heads[proj])
        tensor = torch.from_numpy(w)
        state[name] = tensor if dtype == torch.float32 else tensor.to(dtype)
        types[name] = t.tensor_type.name
    _check_shapes(state, config, path)
    return state, types


def expected_llama_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every ``LlamaForCausalLM`` parameter name -> shape for a LlamaConfig-style dict."""
    d, h, kv, dh = (
        config[k] for k in ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim")
    )
    mlp, vocab = config["intermediate_size"], config["vocab_size"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,)}
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (vocab, d)
    per_layer = {
        "input_layernorm.weight": (d,),
        "post_attention_layernorm.weight": (d,),
        "self_attn.q_proj.weight": (h * dh, d),
        "self_attn.k_proj.weight": (kv * dh, d),
        "self_attn.v_proj.weight": (kv * dh, d),
        "self_attn.o_proj.weight": (d, h * dh),
        "mlp.gate_proj.weight": (mlp, d),
        "mlp.up_proj.weight": (mlp, d),
        "mlp.down_proj.weight": (d, mlp),
    }
    if config.get("attention_bias"):
        per_layer |= {f"self_attn.{p}_proj.bias": (n * dh,) for p, n in (("q", h), ("k", kv), ("v", kv))}
    for i in range(config["num_hidden_layers"]):
        shapes |= {f"model.layers.{i}.{k}": v for k, v in per_layer.items()}
    return shapes


def _check_shapes(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], path: Path) -> None:
    """Raise ModelFileError naming missing, unexpected or mis-shaped tensors."""
    expected = expected_llama_shapes(config)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ModelFileError(
            f"{path}: tensors do not match the metadata ({config['num_hidden_layers']} layers); "
            f"missing: {missing[:5]}{' ...' if len(missing) > 5 else ''}; unexpected: {extra[:5]}."
        )
    bad = [f"{k}: {tuple(state[k].shape)} != {v}" for k, v in expected.items() if tuple(state[k].shape) != v]
    if bad:
        raise ModelFileError(f"{path}: tensor shapes inconsistent with the metadata: {'; '.join(bad[:5])}")
