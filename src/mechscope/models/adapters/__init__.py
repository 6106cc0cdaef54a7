"""Per-family adapters from transformers models: declarative maps, one file per family.

Architecture identity lives only here (``model_type`` → adapter); shared components never branch on it.
"""

from __future__ import annotations

import importlib

from mechscope.errors import ConfigError
from mechscope.models.adapters.base import Adapter

_FAMILIES = {
    "gpt2": "mechscope.models.adapters.gpt2",
    "gpt_neox": "mechscope.models.adapters.neox",
    "llama": "mechscope.models.adapters.llama",
    "qwen2": "mechscope.models.adapters.llama",
    "qwen3": "mechscope.models.adapters.llama",
    "gemma3_text": "mechscope.models.adapters.gemma3",
    "mistral": "mechscope.models.adapters.llama",
}


def adapter_for(model_type: str) -> Adapter:
    """The adapter for a transformers ``model_type``; unknown types list the supported ones."""
    if model_type not in _FAMILIES:
        raise ConfigError(f"no mechscope adapter for transformers model_type {model_type!r}; "
                          f"supported: {sorted(_FAMILIES)}")
    mod = importlib.import_module(_FAMILIES[model_type])
    return mod.adapter(model_type)


def supported_model_types() -> list[str]:
    """The transformers ``model_type`` values mechscope converts."""
    return sorted(_FAMILIES)
