"""Activation caches (a plain mapping) and the analyses that read them (free functions)."""

from mechscope.cache.activation_cache import ActivationCache

__all__ = ["ActivationCache"]
