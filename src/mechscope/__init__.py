"""mechscope: mechanistic interpretability on a laptop CPU.

Everything is a hook: a model is plain PyTorch modules with named ``HookPoint``s between them
(TransformerLens names), and reading, editing, splicing and measuring all go through them.
Heavy submodules import lazily; ``import mechscope`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "HookedTransformer": "mechscope.models.transformer",
    "ModelConfig": "mechscope.models.config",
    "AttentionConfig": "mechscope.models.config",
    "MLPConfig": "mechscope.models.config",
    "NormConfig": "mechscope.models.config",
    "PositionalConfig": "mechscope.models.config",
    "ActivationCache": "mechscope.cache.activation_cache",
    "HookPoint": "mechscope.hooks.point",
    "act_name": "mechscope.hooks.names",
    "load": "mechscope.models.loading",
    "from_hf": "mechscope.models.loading",
    "from_gguf": "mechscope.models.loading",
    "Tokenizer": "mechscope.tokens",
    "FactoredMatrix": "mechscope.models.factored",
}


def __getattr__(name: str) -> Any:
    if name == "utils":  # TransformerLens habit: mechscope.utils.get_act_name
        return importlib.import_module("mechscope.utils")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mechscope' has no attribute {name!r}")


__all__ = sorted(_LAZY) + ["__version__"]
