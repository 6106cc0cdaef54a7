"""The files both dictionary formats share: names, atomic writes, and loaders that name what is wrong.

``io`` (mechscope's format) and ``saelens_format`` (SAELens's layout) both build on this module, so neither
imports the other's internals (``io`` re-exports everything here and the SAELens functions: one import for
users). Every write goes through ``mechscope.io_safety`` (unique temporary, fsync, rename).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from mechscope import io_safety
from mechscope.dictionaries.base import Dictionary
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
    return io_safety.read_json_object(path, ModelFileError)


def read_tensors(path: Path) -> dict[str, Tensor]:
    """Load a safetensors file or raise ``ModelFileError``."""
    if not path.is_file():
        raise ModelFileError(f"{path} does not exist; expected the weights next to the config")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for bad headers / sizes
        raise ModelFileError(f"{path} is not a readable safetensors file (truncated or corrupted?): {e}") from e


def load_state(dictionary: Dictionary, tensors: dict[str, Tensor], where: Path) -> Dictionary:
    """Load ``tensors`` into ``dictionary`` after checking names and shapes against its config."""
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


def check_expectations(d: Dictionary, d_in: int | None, hook_name: str | None, where: Path) -> None:
    """``ShapeError``/``ConfigError`` when the caller expected another width or hook than ``d`` has."""
    if d_in is not None and d.cfg.d_in != d_in:
        raise ShapeError(f"{where}: dictionary reads width d_in={d.cfg.d_in}, but d_in={d_in} was expected")
    if hook_name is not None and d.cfg.hook_name not in (None, hook_name):
        raise ConfigError(f"{where}: dictionary was trained on {d.cfg.hook_name!r}, not {hook_name!r}")
