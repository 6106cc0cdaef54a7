"""TransformerLens's ``utils`` names that its users reach for, mapped to mechscope's.

``get_act_name("z", 3) == "blocks.3.attn.hook_z"``; the compact forms ``get_act_name("k6")`` and
``get_act_name("scale4ln1")`` work as in TransformerLens; ``layer_type`` picks the norm (``ln1``,
``ln2``) for ``scale``/``normalized`` and is otherwise checked against the hook's sublayer.
"""

from __future__ import annotations

import re

from mechscope.errors import HookNameError
from mechscope.hooks.names import act_name

_COMPACT = re.compile(r"^([a-z_]+?)(\d+)([a-z0-9_]*)$")


def get_act_name(name: str, layer: int | None = None, layer_type: str | None = None) -> str:
    """Full hook name from TransformerLens's shorthand (see the module docstring)."""
    if not isinstance(name, str) or not name:
        raise HookNameError(f"get_act_name needs an activation name such as 'resid_pre' or 'z', got {name!r}")
    if layer is None and ("." in name or name.startswith("hook_")):
        return name
    m = _COMPACT.match(name) if layer is None else None
    if m is not None and m.group(1) not in ("hook_",):
        name, layer, layer_type = m.group(1), int(m.group(2)), (m.group(3) or layer_type)
    if layer_type in ("a", "attn", "m", "mlp", "b", "block", "", None):
        return act_name(name, layer)
    if name in ("scale", "normalized"):
        if layer_type not in ("ln1", "ln2"):
            raise HookNameError(f"layer_type for {name!r} must be 'ln1' or 'ln2', got {layer_type!r}")
        return act_name(name, layer, layer_type)
    raise HookNameError(f"layer_type {layer_type!r} does not apply to {name!r}")


__all__ = ["get_act_name"]
