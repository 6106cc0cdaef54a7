"""Tiny Gemma-3 / Qwen3-shaped models (q/k norms, post-sublayer norms, GQA, sliding windows) for the analyses' tests."""

from __future__ import annotations

from typing import Any

from mechscope.models.config import AttentionConfig, NormConfig, PositionalConfig
from tests.conftest import tiny_model


def gemma_like(seed: int = 6, post_sublayer: bool = True, **attn: Any) -> Any:
    """float64, three layers, 4 query / 2 key-value heads, q/k norms, post-sublayer RMSNorms (random weights),
    layers 0 and 2 local (window 4, rotary base 100; layer 1 global, base 10 000). ``attn`` overrides the
    attention config."""
    a = dict(n_heads=4, d_head=8, n_kv_heads=2, qk_norm=True, scale=0.25, sliding_window=4, global_every=2)
    return tiny_model("llama", seed=seed, n_layers=3, embed_scale=2.0,
                      attention=AttentionConfig(**{**a, **attn}),
                      norm=NormConfig(kind="rmsnorm", eps=1e-6, post_sublayer=post_sublayer),
                      positional=PositionalConfig(kind="rotary", rotary_base=10000.0,
                                                  local_rotary_base=100.0)).double()
