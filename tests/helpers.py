"""Re-export of the tiny-model builders in conftest for explicit imports in tests."""

from tests.conftest import FAMILY_KINDS, tiny_cfg, tiny_model

__all__ = ["FAMILY_KINDS", "tiny_cfg", "tiny_model"]
