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

The pieces both formats share (file names, atomic writers, checked readers) live in ``files``; the
SAELens side in ``saelens_format``; this module re-exports both, so ``from mechscope.dictionaries.io import
load_saelens, atomic_write_json`` keeps working.
"""

from __future__ import annotations

import os
from pathlib import Path

from mechscope import io_safety
from mechscope.dictionaries.base import Dictionary
from mechscope.dictionaries.files import (
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    OWNED_FILES,
    SAELENS_CONFIG_FILE,
    SAELENS_WEIGHTS_FILE,
    WEIGHTS_FILE,
    atomic_save_tensors,
    atomic_write_json,
    check_expectations,
    load_state,
    read_json,
    read_tensors,
)
from mechscope.dictionaries.registry import config_from_dict, create
from mechscope.dictionaries.saelens_format import load_saelens, save_saelens
from mechscope.errors import ModelFileError

_load_state, _check_expectations = load_state, check_expectations  # the names before ``files`` existed

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
    check_expectations(dictionary, d_in, hook_name, root)
    return load_state(dictionary, read_tensors(root / WEIGHTS_FILE), root / WEIGHTS_FILE)


__all__ = ["save", "load", "save_saelens", "load_saelens", "atomic_write_json", "atomic_save_tensors",
           "read_json", "read_tensors", "FORMAT", "FORMAT_VERSION", "CONFIG_FILE", "WEIGHTS_FILE",
           "SAELENS_CONFIG_FILE", "SAELENS_WEIGHTS_FILE", "OWNED_FILES", "write_files"]
