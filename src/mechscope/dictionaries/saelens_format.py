"""SAELens's on-disk layout (``cfg.json`` + ``sae_weights.safetensors``), export and import.

See ``io`` for the mapping (the shared file helpers are in ``files``). Scales are folded on export: with ``s_in``/``s_out`` the input/output scales,
``W_enc' = s_in W_enc``, ``W_dec' = W_dec / s_out``, ``b_dec' = b_dec / s_out`` (so the centring
``x - b_dec'`` also rescales), ``W_skip' = W_skip s_in / s_out``; encoder biases and thresholds are
unchanged because pre-activations are unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.dictionaries.base import Dictionary
from mechscope.dictionaries.files import (
    _SAELENS_VERSION,
    OWNED_FILES,
    SAELENS_CONFIG_FILE,
    SAELENS_WEIGHTS_FILE,
    atomic_save_tensors,
    atomic_write_json,
    check_expectations,
    load_state,
    read_json,
    read_tensors,
)
from mechscope.dictionaries.registry import config_from_dict, create
from mechscope.errors import ConfigError, ModelFileError
from mechscope.io_safety import write_dir

_TO_SAELENS = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu",
               "gated": "gated"}
_FROM_SAELENS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated",
                 "transcoder": "transcoder", "skip_transcoder": "transcoder"}


def _folded_weights(d: Dictionary) -> dict[str, Tensor]:
    s_in, s_out = d.cfg.input_scale, d.cfg.output_scale
    w = {k: v.detach().clone() for k, v in d.state_dict().items()}
    w["W_enc"] = w["W_enc"] * s_in
    w["W_dec"] = w["W_dec"] / s_out
    w["b_dec"] = w["b_dec"] / s_out
    if "W_skip" in w:
        w["W_skip"] = (w["W_skip"] * (s_in / s_out)).t().contiguous()
    if d.cfg.architecture == "batchtopk":
        w["threshold"] = torch.full((d.cfg.d_sae,), float(w.pop("threshold").clamp_min(0)), dtype=w["b_enc"].dtype)
    return w


def save_saelens(dictionary: Dictionary, path: str | os.PathLike[str]) -> Path:
    """Write SAELens's layout so ``SAE.load_from_disk(path)`` loads it; returns the directory."""
    cfg = dictionary.cfg
    arch = cfg.architecture
    if arch == "transcoder":
        if getattr(cfg, "k", None) is not None:
            raise ConfigError("SAELens has no TopK transcoder; save it with mechscope's own format (io.save)")
        sl_arch = "skip_transcoder" if getattr(cfg, "skip", False) else "transcoder"
    elif arch in _TO_SAELENS:
        sl_arch = _TO_SAELENS[arch]
    else:
        raise ConfigError(f"SAELens has no {arch!r} architecture; SAELens can hold {sorted(_TO_SAELENS)} and "
                          f"transcoder; use mechscope's own format (io.save)")
    data: dict[str, Any] = {
        "architecture": sl_arch, "d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": cfg.dtype, "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input, "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"hook_name": cfg.hook_name, "model_name": cfg.model_name,
                     "sae_lens_version": _SAELENS_VERSION, "sae_lens_training_version": _SAELENS_VERSION,
                     "mechscope_config": cfg.to_dict()},
    }
    if sl_arch == "topk":
        data.update(k=cfg.k, rescale_acts_by_decoder_norm=False)  # type: ignore[attr-defined]
    if sl_arch in ("transcoder", "skip_transcoder"):
        data["d_out"] = cfg.d_output
    weights = _folded_weights(dictionary)

    def write(out: Path) -> None:
        atomic_save_tensors(out / SAELENS_WEIGHTS_FILE, weights)
        atomic_write_json(out / SAELENS_CONFIG_FILE, data)

    return write_dir(path, write, OWNED_FILES, "a SAELens dictionary")  # one rename: never a torn pair


def _field(data: dict[str, Any], key: str, kind: type, where: Path, default: Any = ...) -> Any:
    """``data[key]`` checked to be of ``kind`` (ints are not bools, bools are not strings like "false")."""
    if key not in data or (data[key] is None and default is not ...):
        if default is ...:
            raise ModelFileError(f"{where}: required field {key!r} is missing (SAELens cfg.json has "
                                 f"architecture, d_in, d_sae, ...)")
        return default
    value = data[key]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is int and ok and value <= 0:
        raise ModelFileError(f"{where}: field {key!r} must be a positive int, got {value!r}")
    if not ok:
        wanted = {int: "a positive int", bool: "true or false", str: "a string", dict: "an object"}[kind]
        raise ModelFileError(f"{where}: field {key!r} must be {wanted}, got {value!r} ({type(value).__name__})")
    return value


def _config_from_saelens(data: dict[str, Any], where: Path) -> dict[str, Any]:
    arch = _field(data, "architecture", str, where, "standard")
    if arch not in _FROM_SAELENS:
        raise ConfigError(f"{where}: SAELens architecture {arch!r} is not supported; "
                          f"supported: {sorted(_FROM_SAELENS)}")
    if _field(data, "normalize_activations", str, where, "none") != "none":
        raise ConfigError(f"{where}: normalize_activations={data['normalize_activations']!r}; fold the "
                          f"normalisation into the weights in SAELens first (only 'none' is read)")
    if _field(data, "reshape_activations", str, where, "none") != "none":
        raise ConfigError(f"{where}: reshape_activations={data['reshape_activations']!r} is not supported")
    meta = _field(data, "metadata", dict, where, {})
    names = {k: _field(meta, k, str, Path(f"{where} metadata"), None) for k in ("hook_name", "model_name")}
    cfg: dict[str, Any] = {"architecture": _FROM_SAELENS[arch], "d_in": _field(data, "d_in", int, where),
                           "d_sae": _field(data, "d_sae", int, where), **names,
                           "apply_b_dec_to_input": _field(data, "apply_b_dec_to_input", bool, where, True)}
    dtype = _field(data, "dtype", str, where, "float32").replace("torch.", "")
    dtype = "float32" if dtype == "float16" else dtype  # read losslessly into float32 parameters
    if dtype not in ("float32", "float64", "bfloat16"):
        raise ConfigError(f"{where}: dtype {dtype!r} is not supported; allowed: float32, float16, float64, bfloat16")
    cfg["dtype"] = dtype
    if arch == "topk":
        cfg["k"] = _field(data, "k", int, where)
        _field(data, "rescale_acts_by_decoder_norm", bool, where, False)
    if arch in ("transcoder", "skip_transcoder"):
        cfg.update(d_out=_field(data, "d_out", int, where), skip=arch == "skip_transcoder",
                   apply_b_dec_to_input=False)
    return cfg


def load_saelens(path: str | os.PathLike[str], *, d_in: int | None = None,
                 hook_name: str | None = None) -> Dictionary:
    """Read SAELens's layout into the matching mechscope dictionary (``relu`` for ``standard``)."""
    root = Path(path)
    data = read_json(root / SAELENS_CONFIG_FILE)
    dictionary = create(config_from_dict(_config_from_saelens(data, root / SAELENS_CONFIG_FILE)))
    check_expectations(dictionary, d_in, hook_name, root)
    tensors = read_tensors(root / SAELENS_WEIGHTS_FILE)
    if "W_skip" in tensors:
        tensors["W_skip"] = tensors["W_skip"].t().contiguous()
    if data.get("architecture") == "topk" and data.get("rescale_acts_by_decoder_norm"):
        norms = tensors["W_dec"].norm(dim=-1)  # fold: topk(pre * n) == topk of the folded pre-activations
        tensors.update(W_dec=tensors["W_dec"] / norms[:, None], W_enc=tensors["W_enc"] * norms,
                       b_enc=tensors["b_enc"] * norms)
    return load_state(dictionary, tensors, root / SAELENS_WEIGHTS_FILE)


__all__ = ["save_saelens", "load_saelens"]
