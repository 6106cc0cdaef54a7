"""Old import paths of a case study keep working: its package finds any name in its role modules.

A case study package (``experiments/<study>/``) re-exports its modules' public names with star imports
(typed, visible to mypy); ``find`` backs the package's ``__getattr__`` for everything else a caller of the
old single-module path may import (private helpers, names left out of a module's ``__all__``, names added
later by someone editing the module).
"""

from __future__ import annotations

import importlib
from typing import Any


def find(package: str, name: str, modules: tuple[str, ...]) -> Any:
    """``name`` from the first of ``package``'s ``modules`` that has it, else ``AttributeError``."""
    if not (name.startswith("__") and name.endswith("__")):
        for module in modules:
            mod = importlib.import_module(f"{package}.{module}")
            if name in vars(mod):
                return vars(mod)[name]
    raise AttributeError(f"module {package!r} has no attribute {name!r}")
