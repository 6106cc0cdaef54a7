"""The hook-name grammar (TransformerLens names) and the registered shape of every hook point.

Names: top level ``hook_embed``, ``hook_pos_embed``, ``hook_tokens``; per block ``blocks.{L}.<suffix>``.
Each suffix below is registered with its axes; ``resolve_shape`` turns axes into sizes for a config, and
a test checks every model's hook points against this table.

``act_name("z", 3) == "blocks.3.attn.hook_z"`` follows TransformerLens's ``get_act_name`` shorthand.
"""

from __future__ import annotations

from typing import Any

from mechscope.errors import HookNameError, close_matches

# suffix (after "blocks.L.") or top-level name -> axes
HOOK_SHAPES: dict[str, tuple[str, ...]] = {
    "hook_tokens": ("batch", "pos"),
    "hook_embed": ("batch", "pos", "d_model"),
    "hook_pos_embed": ("batch", "pos", "d_model"),
    "hook_resid_pre": ("batch", "pos", "d_model"),
    "hook_resid_mid": ("batch", "pos", "d_model"),
    "hook_resid_post": ("batch", "pos", "d_model"),
    "hook_attn_in": ("batch", "pos", "n_heads", "d_model"),
    "hook_q_input": ("batch", "pos", "n_heads", "d_model"),
    "hook_k_input": ("batch", "pos", "n_kv_heads", "d_model"),
    "hook_v_input": ("batch", "pos", "n_kv_heads", "d_model"),
    "hook_attn_out": ("batch", "pos", "d_model"),
    "hook_mlp_in": ("batch", "pos", "d_model"),
    "hook_mlp_out": ("batch", "pos", "d_model"),
    "attn.hook_q": ("batch", "pos", "n_heads", "d_head"),
    "attn.hook_k": ("batch", "pos", "n_kv_heads", "d_head"),
    "attn.hook_v": ("batch", "pos", "n_kv_heads", "d_head"),
    "attn.hook_rot_q": ("batch", "pos", "n_heads", "d_head"),
    "attn.hook_rot_k": ("batch", "pos", "n_kv_heads", "d_head"),
    "attn.hook_attn_scores": ("batch", "n_heads", "query_pos", "key_pos"),
    "attn.hook_pattern": ("batch", "n_heads", "query_pos", "key_pos"),
    "attn.hook_z": ("batch", "pos", "n_heads", "d_head"),
    "attn.hook_result": ("batch", "pos", "n_heads", "d_model"),
    "mlp.hook_pre": ("batch", "pos", "d_mlp"),
    "mlp.hook_pre_linear": ("batch", "pos", "d_mlp"),
    "mlp.hook_post": ("batch", "pos", "d_mlp"),
    "ln1.hook_scale": ("batch", "pos", "1"),
    "ln1.hook_normalized": ("batch", "pos", "d_model"),
    "ln2.hook_scale": ("batch", "pos", "1"),
    "ln2.hook_normalized": ("batch", "pos", "d_model"),
    "ln1_post.hook_scale": ("batch", "pos", "1"),
    "ln1_post.hook_normalized": ("batch", "pos", "d_model"),
    "ln2_post.hook_scale": ("batch", "pos", "1"),
    "ln2_post.hook_normalized": ("batch", "pos", "d_model"),
    "attn.q_norm.hook_scale": ("batch", "pos", "n_heads", "1"),
    "attn.q_norm.hook_normalized": ("batch", "pos", "n_heads", "d_head"),
    "attn.k_norm.hook_scale": ("batch", "pos", "n_kv_heads", "1"),
    "attn.k_norm.hook_normalized": ("batch", "pos", "n_kv_heads", "d_head"),
    "ln_final.hook_scale": ("batch", "pos", "1"),
    "ln_final.hook_normalized": ("batch", "pos", "d_model"),
}

# shorthand -> suffix, as in TransformerLens's get_act_name
_ALIASES: dict[str, str] = {
    "embed": "hook_embed",
    "pos_embed": "hook_pos_embed",
    "tokens": "hook_tokens",
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_post": "hook_resid_post",
    "attn_in": "hook_attn_in",
    "q_input": "hook_q_input",
    "k_input": "hook_k_input",
    "v_input": "hook_v_input",
    "attn_out": "hook_attn_out",
    "mlp_in": "hook_mlp_in",
    "mlp_out": "hook_mlp_out",
    "q": "attn.hook_q",
    "k": "attn.hook_k",
    "v": "attn.hook_v",
    "rot_q": "attn.hook_rot_q",
    "rot_k": "attn.hook_rot_k",
    "attn_scores": "attn.hook_attn_scores",
    "scores": "attn.hook_attn_scores",
    "pattern": "attn.hook_pattern",
    "attn": "attn.hook_pattern",
    "z": "attn.hook_z",
    "result": "attn.hook_result",
    "pre": "mlp.hook_pre",
    "pre_linear": "mlp.hook_pre_linear",
    "post": "mlp.hook_post",
}
_TOP_LEVEL = {"hook_embed", "hook_pos_embed", "hook_tokens"}


def act_name(name: str, layer: int | None = None, sub: str | None = None) -> str:
    """Full hook name from a shorthand: ``act_name("z", 3) -> "blocks.3.attn.hook_z"``.

    ``sub`` selects the norm for ``scale``/``normalized``: ``act_name("scale", 2, "ln1")``; with
    ``layer=None`` those refer to ``ln_final``.

    Example:
        >>> act_name("resid_pre", 0)
        'blocks.0.hook_resid_pre'
        >>> act_name("pattern", 1)
        'blocks.1.attn.hook_pattern'
    """
    if name.startswith("blocks.") or name in _TOP_LEVEL or name.startswith("ln_final."):
        return name
    if name in ("scale", "normalized"):
        if layer is None:
            return f"ln_final.hook_{name}"
        return f"blocks.{layer}.{sub or 'ln1'}.hook_{name}"
    if name not in _ALIASES:
        near = close_matches(name, _ALIASES)
        raise HookNameError(
            f"Unknown activation shorthand {name!r}; did you mean {near}? Allowed: {sorted(_ALIASES)}"
        )
    suffix = _ALIASES[name]
    if suffix in _TOP_LEVEL:
        return suffix
    if layer is None:
        raise HookNameError(f"Activation {name!r} lives in a block: pass a layer, e.g. act_name({name!r}, 0)")
    return f"blocks.{layer}.{suffix}"


def registered_axes(name: str) -> tuple[str, ...]:
    """The registered axes of a full hook name (``blocks.3.attn.hook_z`` -> batch pos n_heads d_head)."""
    if name in HOOK_SHAPES:
        return HOOK_SHAPES[name]
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) > 2:
        suffix = ".".join(parts[2:])
        if suffix in HOOK_SHAPES:
            return HOOK_SHAPES[suffix]
    raise HookNameError(f"No registered shape for hook {name!r}")


def resolve_shape(axes: tuple[str, ...], sizes: dict[str, Any]) -> tuple[int, ...]:
    """Sizes for ``axes`` from a dict of dimension sizes; literal digits stay literal."""
    return tuple(int(a) if a.isdigit() else int(sizes[a]) for a in axes)
