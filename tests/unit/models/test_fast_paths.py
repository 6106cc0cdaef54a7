"""The inference fast paths (fused QKV GEMM, in-place ops, rotary without copies) change no numbers.

Checked against independent computations: textbook rotary and RMSNorm formulas, the residual-stream
identities between cached activations, and the same forward under autograd (where nothing runs in place).
"""

from __future__ import annotations

import pytest
import torch

from mechscope.models.components.norm import RMSNorm
from mechscope.models.components.rotary import apply_rotary, rotary_cos_sin
from mechscope.models.config import NormConfig
from tests.helpers import FAMILY_KINDS, tiny_model


def _reference_rotary(x: torch.Tensor, positions: torch.Tensor, rotary_dim: int, base: float) -> torch.Tensor:
    """transformers' formula: x * cos + rotate_half(x) * sin on the first rotary_dim dims."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)[:, :, None, :]
    cos, sin = emb.cos(), emb.sin()
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotate_half = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
    return torch.cat([rot * cos + rotate_half * sin, rest], dim=-1)


@pytest.mark.parametrize("rotary_dim", [16, 8])
def test_rotary_equals_the_reference_formula_bit_for_bit(rotary_dim: int) -> None:
    g = torch.Generator().manual_seed(0)
    fused = torch.randn(2, 7, 5, 16, generator=g) * 10  # like a fused QKV output: rotate a strided slice
    x = fused[:, :, :3]
    positions = torch.arange(3, 10).expand(2, 7)
    padded = torch.tensor([[0, 0, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5, 6]])  # per-row positions (left padding)
    for pos in (positions, padded):
        cos, sin = rotary_cos_sin(pos, rotary_dim, 10000.0, torch.float32)
        expected = _reference_rotary(x, pos, rotary_dim, 10000.0)
        with torch.no_grad():
            assert torch.equal(apply_rotary(x, cos, sin), expected)
        leaf = x.clone().requires_grad_()
        out = apply_rotary(leaf, cos, sin)  # autograd path: same numbers, and differentiable
        assert torch.equal(out.detach(), expected)
        out.square().sum().backward()
        assert leaf.grad is not None and leaf.grad.abs().sum() > 0


def test_rmsnorm_float32_equals_the_formula_and_bfloat16_is_no_less_accurate() -> None:
    g = torch.Generator().manual_seed(0)
    norm = RMSNorm(64, NormConfig(kind="rmsnorm"))
    with torch.no_grad():
        norm.w.copy_(torch.randn(64, generator=g))
    x = torch.randn(3, 5, 64, generator=g) * 4
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.w
    with torch.no_grad():
        assert torch.equal(norm.normalize(x), expected)
        assert torch.equal(norm(x), expected)
    assert torch.equal(norm(x).detach(), expected)  # autograd path
    xb, nb = x.bfloat16(), norm.to(torch.bfloat16)
    exact = (xb.double() * torch.rsqrt(xb.double().pow(2).mean(-1, keepdim=True) + norm.eps) * nb.w.double())
    naive = xb * torch.rsqrt(xb.pow(2).mean(-1, keepdim=True) + norm.eps) * nb.w  # all in bfloat16
    with torch.no_grad():
        err = (nb.normalize(xb).double() - exact).abs().mean()
    assert err <= (naive.double() - exact).abs().mean()


@pytest.mark.parametrize("kind", FAMILY_KINDS)
def test_forward_is_identical_with_and_without_autograd(kind: str) -> None:
    model = tiny_model(kind)
    tokens = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(1))
    with_grad = model(tokens)
    with torch.no_grad():
        no_grad = model(tokens)
    with torch.inference_mode():
        inference = model(tokens)
    assert torch.equal(with_grad.detach(), no_grad)
    assert torch.equal(no_grad, inference)


@pytest.mark.parametrize("kind", ["llama", "neox", "gpt2"])
def test_cached_residual_pieces_are_not_modified_in_place(kind: str) -> None:
    model = tiny_model(kind)
    tokens = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(2))
    names = ["blocks.0.hook_resid_pre", "blocks.0.hook_attn_out", "blocks.0.hook_mlp_out",
             "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]
    if not model.cfg.parallel_attn_mlp:
        names.append("blocks.0.hook_resid_mid")
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=names)
        plain_resid = model(tokens, stop_at_layer=2)
    c = {n: cache[n] for n in names}
    attn_plus = c["blocks.0.hook_resid_pre"] + c["blocks.0.hook_attn_out"]
    if model.cfg.parallel_attn_mlp:
        assert torch.equal(attn_plus + c["blocks.0.hook_mlp_out"], c["blocks.0.hook_resid_post"])
    else:
        assert torch.equal(attn_plus, c["blocks.0.hook_resid_mid"])
        assert torch.equal(c["blocks.0.hook_resid_mid"] + c["blocks.0.hook_mlp_out"], c["blocks.0.hook_resid_post"])
    assert torch.equal(c["blocks.0.hook_resid_post"], c["blocks.1.hook_resid_pre"])
    assert torch.equal(c["blocks.1.hook_resid_post"], plain_resid)


def test_gated_mlp_hooks_see_the_textbook_values() -> None:
    model = tiny_model("llama")
    tokens = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=["blocks.1.hook_resid_mid", "blocks.1.mlp.hook_pre",
                                                       "blocks.1.mlp.hook_pre_linear", "blocks.1.mlp.hook_post"])
        _, post_only = model.run_with_cache(tokens, names=["blocks.1.mlp.hook_post"])
    mlp, ln2 = model.blocks[1].mlp, model.blocks[1].ln2
    x = cache["blocks.1.hook_resid_mid"]
    normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + ln2.eps) * ln2.w
    pre, lin = normed @ mlp.W_gate, normed @ mlp.W_in
    torch.testing.assert_close(cache["blocks.1.mlp.hook_pre"], pre, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache["blocks.1.mlp.hook_pre_linear"], lin, rtol=1e-5, atol=1e-5)
    post = torch.nn.functional.silu(pre) * lin
    torch.testing.assert_close(cache["blocks.1.mlp.hook_post"], post, rtol=1e-5, atol=1e-5)
    assert torch.equal(post_only["blocks.1.mlp.hook_post"], cache["blocks.1.mlp.hook_post"])


def test_fused_weights_built_under_inference_mode_serve_autograd_later() -> None:
    model = tiny_model("llama").requires_grad_(False)
    tokens = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        model(tokens)  # builds the fused QKV copies
    leaf: list[torch.Tensor] = []

    def make_leaf(x: torch.Tensor, hook) -> torch.Tensor:
        leaf.append(x.detach().clone().requires_grad_())
        return leaf[0]

    logits = model.run_with_hooks(tokens, fwd=[("blocks.0.hook_resid_pre", make_leaf)])
    logits[0, -1].logsumexp(-1).backward()  # frozen weights, input that requires grad
    assert leaf[0].grad is not None and leaf[0].grad.abs().sum() > 0


def test_autocast_training_runs_attention_in_float32() -> None:
    """bf16 training: the fused attention kernel gets float32 inputs (its bf16 CPU backward is slow); the
    gradients equal a float32 attention on the same bf16-rounded projections, and inference keeps bf16."""
    from mechscope.models.components.attention import _sdpa

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g).bfloat16().requires_grad_(True) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = _sdpa(q, k, v, None, 0.5, False)
        with torch.no_grad():
            assert _sdpa(q, k, v, None, 0.5, False).dtype == torch.bfloat16
    assert z.dtype == torch.float32
    z.square().sum().backward()
    qf, kf, vf = (t.detach().float().requires_grad_(True) for t in (q, k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(qf, kf, vf, is_causal=True, scale=0.5)
    assert torch.allclose(z, ref, atol=1e-6)
    ref.square().sum().backward()
    assert q.grad is not None and qf.grad is not None
    assert torch.allclose(q.grad.float(), qf.grad, atol=1e-2, rtol=1e-2)
