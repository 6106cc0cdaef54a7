"""Read a GGUF file (llama.cpp's format) into a transformers-named float state dict.

A GGUF file holds three things: metadata (architecture hyper-parameters under ``<arch>.*`` keys, the
tokenizer under ``tokenizer.ggml.*``), tensor descriptions, and (usually quantised) tensor data.
:func:`read_gguf` turns it into plain data mechscope's adapters already understand:

* ``hf_config``: a transformers config dict (``model_type``, ``hidden_size``, ``num_hidden_layers``, ...);
* ``state_dict``: transformers parameter names (``model.layers.3.self_attn.q_proj.weight``, ...),
  dequantised with ``gguf.quants.dequantize`` to float32 (the function transformers' own GGUF loader uses),
  with llama.cpp's layout and value changes undone;
* ``metadata``: every key-value field as Python values (the tokenizer is built from it by
  :meth:`mechscope.tokens.Tokenizer.from_gguf_metadata`, with
  :func:`mechscope.models.gguf_tokenizer.gguf_tokenizer`, re-exported here).

The architectures are a registry (``models/gguf_archs.py``: ``llama`` — Llama 1/2, SmolLM, Mistral-as-llama
—, ``qwen2``, ``qwen3``, ``gemma3``); each entry says what llama.cpp's converter changed. For ``llama`` it
reordered the rows of ``W_Q`` and ``W_K`` within each head from the "rotate-half" layout transformers uses
(first half / second half of the head) to the interleaved pairs its rotary kernel expects; we undo it exactly
as ``convert_hf_to_gguf.py`` did it. For ``gemma3`` it stored every norm weight as ``1 + w``; we subtract the 1,
as transformers' loader does. The weights then equal those of transformers' own GGUF loader (and of the
original checkpoint, up to quantisation). Other architectures raise :class:`~mechscope.errors.ModelFileError`
naming what is supported.
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
from mechscope.models.gguf_archs import ARCHITECTURES, GGUFArch, base_config, expected_shapes
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

SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)
"""GGUF ``general.architecture`` values :func:`read_gguf` converts."""

_GGUF_MAGIC = b"GGUF"

# GGUF top-level tensor name -> transformers name (block tensors: the architecture's ``block_names``).
_TOP_LEVEL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
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
    """A transformers config dict of the architecture's ``model_type`` (e.g. ``LlamaConfig(**hf_config)``)."""
    state_dict: dict[str, torch.Tensor]
    """transformers parameter names -> dequantised tensors (no ``lm_head.weight`` when tied)."""
    metadata: dict[str, Any]
    """Every GGUF key-value field as a Python value (str, int, float, bool or list of those)."""
    tensor_types: dict[str, str]
    """transformers name -> the GGUF storage type it was dequantised from (``"Q4_1"``, ``"F32"``...)."""


def read_gguf(path: str | Path, *, dtype: torch.dtype = torch.float32) -> GGUFModel:
    """Read a GGUF file of a supported architecture: config, dequantised state dict and metadata.

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
    hf_config = base_config(str(arch), metadata, tensors, path)
    state_dict, types = _state_dict(ARCHITECTURES[str(arch)], tensors, hf_config, path, dtype)
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


def _hf_name(gguf_name: str, block_names: Mapping[str, str]) -> str | None:
    """The transformers name of a GGUF tensor name (None for tensors that carry no parameter, "" unknown)."""
    if _IGNORED.fullmatch(gguf_name):
        return None
    top, _, kind = gguf_name.rpartition(".")
    if top in _TOP_LEVEL_NAMES:
        return f"{_TOP_LEVEL_NAMES[top]}.{kind}"
    m = _BLOCK_RE.fullmatch(gguf_name)
    if m and m.group(2) in block_names:
        return f"model.layers.{m.group(1)}.{block_names[m.group(2)]}.{m.group(3)}"
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


def _state_dict(
    arch: GGUFArch, tensors: Mapping[str, Any], config: Mapping[str, Any], path: Path, dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Dequantise, rename and undo the converter's changes for every tensor; check names and shapes."""
    state: dict[str, torch.Tensor] = {}
    types: dict[str, str] = {}
    heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}
    for gguf_name, t in tensors.items():
        name = _hf_name(gguf_name, arch.block_names)
        if name is None:
            continue
        if not name:
            raise ModelFileError(f"{path}: unexpected tensor {gguf_name!r} for the {arch.model_type} architecture.")
        w = _dequantize(t, path)
        proj = name.rsplit(".", 2)[-2]
        if arch.permute_qk and proj in heads:
            w = _unpermute_rotary(w, heads[proj])
        if arch.norm_offset and name.endswith("norm.weight"):
            w = w - np.float32(arch.norm_offset)  # float32, as transformers' Gemma processor does
        tensor = torch.from_numpy(w)
        state[name] = tensor if dtype == torch.float32 else tensor.to(dtype)
        types[name] = t.tensor_type.name
    biases = frozenset(p for p in "qkvo" if f"blk.0.attn_{'output' if p == 'o' else p}.bias" in tensors)
    _check_shapes(state, expected_shapes(config, arch.block_names, biases), config, path)
    return state, types


def expected_llama_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every ``LlamaForCausalLM`` parameter name -> shape for a LlamaConfig-style dict."""
    biases = frozenset("qkv") if config.get("attention_bias") else frozenset()
    return expected_shapes(config, ARCHITECTURES["llama"].block_names, biases)


def _check_shapes(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]],
                  config: Mapping[str, Any], path: Path) -> None:
    """Raise ModelFileError naming missing, unexpected or mis-shaped tensors."""
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
