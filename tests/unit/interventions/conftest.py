"""Tiny seeded models and token pairs for the intervention tests."""

from __future__ import annotations

import pytest
import torch

from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig, PositionalConfig
from mechscope.models.transformer import HookedTransformer


def gpt2_like(n_layers: int = 2) -> HookedTransformer:
    """LayerNorm, learned positions, biases, GELU MLP."""
    cfg = ModelConfig(d_model=16, n_layers=n_layers, d_vocab=23, n_ctx=12,
                      attention=AttentionConfig(n_heads=2, d_head=8, qkv_bias=True, out_bias=True),
                      mlp=MLPConfig(d_mlp=32, act="gelu_new", bias=True), unembed_bias=True)
    return HookedTransformer(cfg, seed=0).eval()


def llama_like(n_layers: int = 2) -> HookedTransformer:
    """RMSNorm, rotary, grouped-query attention, gated SiLU MLP (SmolLM2's shape, tiny)."""
    cfg = ModelConfig(d_model=16, n_layers=n_layers, d_vocab=23, n_ctx=12,
                      attention=AttentionConfig(n_heads=4, d_head=4, n_kv_heads=2),
                      mlp=MLPConfig(kind="gated", d_mlp=24, act="silu"), norm=NormConfig(kind="rmsnorm"),
                      positional=PositionalConfig(kind="rotary"))
    return HookedTransformer(cfg, seed=1).eval()


def linear_readout(n_layers: int = 2) -> HookedTransformer:
    """Attention-only, no norms: logits are linear in the last layer's z / attn_out / resid_post."""
    cfg = ModelConfig(d_model=16, n_layers=n_layers, d_vocab=23, n_ctx=12,
                      attention=AttentionConfig(n_heads=2, d_head=8), mlp=None, norm=NormConfig(kind="none"))
    return HookedTransformer(cfg, seed=2).eval()


@pytest.fixture(params=["gpt2_like", "llama_like"])
def model(request: pytest.FixtureRequest) -> HookedTransformer:
    return {"gpt2_like": gpt2_like, "llama_like": llama_like}[request.param]()


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clean [3 6], corrupted [3 6], answer [3], wrong [3]) differing at positions 1 and 3."""
    gen = torch.Generator().manual_seed(5)
    clean = torch.randint(0, 23, (3, 6), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 1] = (clean[:, 1] + 7) % 23
    corrupted[:, 3] = (clean[:, 3] + 3) % 23
    answer = torch.tensor([1, 2, 3])
    wrong = torch.tensor([4, 5, 6])
    return clean, corrupted, answer, wrong
