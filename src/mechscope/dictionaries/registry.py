"""Architecture registry: the ``architecture`` string in a config file names a (Dictionary, Config) pair.

Variants register themselves with :func:`register` when their module is imported; :func:`_load_builtin`
imports the built-in variant modules lazily so ``import mechscope`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from mechscope.dictionaries.base import Dictionary, DictionaryConfig
from mechscope.errors import ConfigError, close_matches
from mechscope.validation import build

_REGISTRY: dict[str, type[Dictionary]] = {}
_BUILTIN = ("relu", "topk", "batchtopk", "jumprelu", "gated", "transcoder", "crosscoder", "clt",
            "matryoshka")


def register(cls: type[Dictionary]) -> type[Dictionary]:
    """Class decorator: register a dictionary class under its config's ``architecture``."""
    arch = cls.config_class.architecture
    if not arch:
        raise ConfigError(f"{cls.__name__}.config_class must set a non-empty `architecture`")
    if arch in _REGISTRY and _REGISTRY[arch] is not cls:
        raise ConfigError(f"architecture {arch!r} is already registered to {_REGISTRY[arch].__name__}")
    _REGISTRY[arch] = cls
    return cls


def _load_builtin() -> None:
    for name in _BUILTIN:
        importlib.import_module(f"mechscope.dictionaries.{name}")


def architectures() -> list[str]:
    """All registered architecture names."""
    _load_builtin()
    return sorted(_REGISTRY)


def dictionary_class(architecture: str) -> type[Dictionary]:
    """The dictionary class of an architecture name; ``ConfigError`` with close matches if unknown."""
    _load_builtin()
    if architecture not in _REGISTRY:
        near = close_matches(architecture, _REGISTRY)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise ConfigError(f"Unknown dictionary architecture {architecture!r}.{hint} Known: {sorted(_REGISTRY)}")
    return _REGISTRY[architecture]


def config_from_dict(data: dict[str, Any]) -> DictionaryConfig:
    """Rebuild a config from ``to_dict()`` output; unknown keys raise ``ConfigError``."""
    if "architecture" not in data:
        raise ConfigError("dictionary config has no 'architecture' field; known: " + ", ".join(architectures()))
    arch = data["architecture"]
    if not isinstance(arch, str):
        raise ConfigError(f"dictionary config 'architecture' must be a string, got {arch!r}; known: "
                          + ", ".join(architectures()))
    cls = dictionary_class(arch).config_class
    return build(cls, data, ignore=("architecture",))


def create(cfg: DictionaryConfig) -> Dictionary:
    """Instantiate the dictionary class registered for ``cfg.architecture``."""
    return dictionary_class(cfg.architecture)(cfg)


__all__ = ["register", "architectures", "dictionary_class", "config_from_dict", "create"]
