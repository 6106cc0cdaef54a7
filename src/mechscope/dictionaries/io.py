"""Saving and loading dictionaries: our versioned format and SAELens's on-disk layout, both ways.

**Ours** (a directory): ``config.json`` = ``{"format": "mechscope.dictionary", "format_version": 1,
"config": {...architecture and every config field...}}`` and ``dictionary.safetensors`` holding the
state dict (``W_enc [d_in d_sae]``, ``W_dec [d_sae d_out]``, ``b_enc``, ``b_dec`` and variant extras).

**SAELens** (sae-lens >= 6): ``cfg.json`` (``architecture`` in ``standard|topk|jumprelu|gated|
transcoder|skip_transcoder``, ``d_in``, ``d_sae``, ``dtype``, ``apply_b_dec_to_input``,
``normalize_activations``, ``metadata.hook_name`` / ``model_name``, ``k`` for TopK, ``d_out`` for
transcoders) and ``sae_weights.safetensors`` with the same tensor names (``W_skip`` is ``[d_out d_in]``
there). ReLU maps to ``standard``; BatchTopK is written as ``jumprelu`` with its global threshold on every
latent, as SAELens does. Input scales are folded into the weights on export. Crosscoders and TopK
transcoders have no SAELens equivalent. Files are written atomically (tmp + fsync + rename); every load
failure raises ``ModelFileError`` / ``ConfigError`` / ``ShapeError`` saying what was wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from mechscope import io_safety
from mechscope.dictionaries.base import Dictionary
from mechscope.dictionaries.registry import config_from_dict, create
from mechscope.errors import ConfigError, ModelFileError, ShapeError

FORMAT = "mechscope.dictionary"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "dictionary.safetensors"
SAELENS_CONFIG_FILE, SAELENS_WEIGHTS_FILE = "cfg.json", "sae_weights.safetensors"
_SAELENS_VERSION = "6.0.0"  # the layout version we write (any 6.x reads it)


# -- atomic files (unique temporaries, fsync, rename: see io_safety) ------------------------------------
def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON so that ``path`` holds either the old or the complete new content."""
    io_safety.atomic_write_json(path, data)


def atomic_save_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """``safetensors`` save via a unique temporary + fsync + rename."""
    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    io_safety.atomic_write(path, lambda p: save_file(clean, str(p), metadata=metadata))


OWNED_FILES = {CONFIG_FILE, WEIGHTS_FILE, SAELENS_CONFIG_FILE, SAELENS_WEIGHTS_FILE}


def read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON object file or raise ``ModelFileError``."""
    if not path.is_file():
        raise ModelFileError(f"{path} does not exist; expected a dictionary directory with {path.name}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path} is not valid JSON (truncated or corrupted?): {e}") from e
    if not isinstance(data, dict):
        raise ModelFileError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def read_tensors(path: Path) -> dict[str, Tensor]:
    """Load a safetensors file or raise ``ModelFileError``."""
    if not path.is_file():
        raise ModelFileError(f"{path} does not exist; expected the weights next to the config")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for bad headers / sizes
        raise ModelFileError(f"{path} is not a readable safetensors file (truncated or corrupted?): {e}") from e


def _load_state(dictionary: Dictionary, tensors: dict[str, Tensor], where: Path) -> Dictionary:
    expected = dictionary.state_dict()
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ModelFileError(f"{where}: tensors do not match a {dictionary.cfg.architecture} dictionary; "
                             f"missing {missing}, unexpected {extra}")
    for name, ref in expected.items():
        if tuple(tensors[name].shape) != tuple(ref.shape):
            raise ModelFileError(f"{where}: tensor {name} has shape {tuple(tensors[name].shape)} but the config "
                                 f"(d_in={dictionary.cfg.d_in}, d_sae={dictionary.cfg.d_sae}) needs {tuple(ref.shape)}")
    dictionary.load_state_dict({k: v.to(ref.dtype) for (k, ref), v in
                                zip(expected.items(), (tensors[k] for k in expected))})
    return dictionary


def _check_expectations(d: Dictionary, d_in: int | None, hook_name: str | None, where: Path) -> None:
    if d_in is not None and d.cfg.d_in != d_in:
        raise ShapeError(f"{where}: dictionary reads width d_in={d.cfg.d_in}, but d_in={d_in} was expected")
    if hook_name is not None and d.cfg.hook_name not in (None, hook_name):
        raise ConfigError(f"{where}: dictionary was trained on {d.cfg.hook_name!r}, not {hook_name!r}")


# -- our format ---------------------------------------------------------------------------------------
def save(dictionary: Dictionary, path: str | os.PathLike[str]) -> Path:
    """Save in mechscope's format (``config.json`` + ``dictionary.safetensors``); returns the directory.

    The directory is built under a hidden temporary name and published by one rename, so a kill never
    leaves new weights beside an old (or no) config.
    """
    return io_safety.write_dir(path, lambda d: write_files(dictionary, d), OWNED_FILES, "a dictionary")


def write_files(dictionary: Dictionary, out: Path) -> None:
    """Write ``config.json`` + ``dictionary.safetensors`` into the existing directory ``out``."""
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "architecture": dictionary.cfg.architecture}
    atomic_save_tensors(out / WEIGHTS_FILE, dict(dictionary.state_dict()), meta)
    atomic_write_json(out / CONFIG_FILE, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                          "config": dictionary.cfg.to_dict()})


def load(path: str | os.PathLike[str], *, d_in: int | None = None, hook_name: str | None = None) -> Dictionary:
    """Load a dictionary saved by :func:`save`; ``d_in``/``hook_name`` optionally check compatibility."""
    root = Path(path)
    io_safety.recover_dir(root)  # a save killed between its two renames left the old directory aside
    if not root.is_dir():
        raise ModelFileError(f"{root} is not a directory; a dictionary is a directory with {CONFIG_FILE} "
                             f"and {WEIGHTS_FILE}")
    if not (root / CONFIG_FILE).exists() and (root / SAELENS_CONFIG_FILE).exists():
        return load_saelens(root, d_in=d_in, hook_name=hook_name)
    data = read_json(root / CONFIG_FILE)
    if data.get("format") != FORMAT:
        raise ModelFileError(f"{root / CONFIG_FILE}: format is {data.get('format')!r}, expected {FORMAT!r}")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(f"{root / CONFIG_FILE}: format_version {version!r} is not supported "
                             f"(this mechscope reads versions <= {FORMAT_VERSION}); upgrade mechscope")
    config = data.get("config")
    if not isinstance(config, dict):
        raise ModelFileError(f"{root / CONFIG_FILE}: field 'config' must be an object of dictionary config "
                             f"fields, got {config!r}")
    dictionary = create(config_from_dict(dict(config)))
    _check_expectations(dictionary, d_in, hook_name, root)
    return _load_state(dictionary, read_tensors(root / WEIGHTS_FILE), root / WEIGHTS_FILE)


__all__ = ["save", "load", "save_saelens", "load_saelens", "atomic_write_json", "atomic_save_tensors",
           "read_json", "read_tensors", "FORMAT_VERSION"]

from mechscope.dictionaries.saelens_format import load_saelens, save_saelens  # noqa: E402
