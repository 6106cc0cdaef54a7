"""HookedTransformer: hook shapes, hooks scoping, caching, errors, save/load, padding, fused vs explicit."""

from __future__ import annotations

import json

import pytest
import torch

from mechscope.errors import ConfigError, HookNameError, ModelFileError, ShapeError, TokenError
from mechscope.hooks.names import registered_axes, resolve_shape
from mechscope.models.config import AttentionConfig, ModelConfig
from mechscope.models.transformer import HookedTransformer
from tests.helpers import FAMILY_KINDS, tiny_model


@pytest.mark.parametrize("kind", FAMILY_KINDS)
def test_every_hook_produces_its_registered_shape(kind: str) -> None:
    model = tiny_model(kind)
    tokens = torch.randint(0, 50, (3, 7))
    _, cache = model.run_with_cache(tokens)
    assert set(cache) == set(model.hook_dict)
    sizes = model.cfg.dim_sizes(batch=3, pos=7)
    for name, act in cache.items():
        assert tuple(act.shape) == resolve_shape(registered_axes(name), sizes), name


@pytest.mark.parametrize("kind", FAMILY_KINDS)
def test_caching_everything_does_not_change_logits(kind: str) -> None:
    model = tiny_model(kind)
    tokens = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        plain = model(tokens)
    cached, _ = model.run_with_cache(tokens)  # explicit attention, per-head inputs, hook_result all active
    assert torch.allclose(plain, cached, atol=1e-5)


def test_hooks_removed_even_on_exception() -> None:
    model = tiny_model()
    with pytest.raises(RuntimeError), model.hooks(fwd=[("blocks.0.hook_resid_pre", lambda x, h: None)]):
        raise RuntimeError("boom")
    assert not any(hp.has_hooks for hp in model.hook_dict.values())


def test_hook_can_replace_activation_and_run_with_hooks_is_one_shot() -> None:
    model = tiny_model()
    tokens = torch.randint(0, 50, (1, 5))
    zero = model.run_with_hooks(tokens, fwd=[(lambda n: n.endswith("hook_resid_post") and "blocks.1" in n,
                                             lambda x, h: torch.zeros_like(x))])
    expected = model.unembed(model.ln_final(torch.zeros(1, 5, 32)))
    assert torch.allclose(zero, expected, atol=1e-6)
    assert not torch.allclose(model(tokens), zero)


def test_unknown_hook_name_lists_close_matches() -> None:
    model = tiny_model()
    with pytest.raises(HookNameError, match="blocks.0.attn.hook_z"):
        model.run_with_cache(torch.tensor([[1, 2]]), names=["blocks.0.attn.hook_zz"])


def test_cache_holds_only_requested_names_and_gradients_when_asked() -> None:
    model = tiny_model()
    tokens = torch.randint(0, 50, (2, 6))
    _, cache = model.run_with_cache(tokens, names=["blocks.1.attn.hook_z"])
    assert list(cache) == ["blocks.1.attn.hook_z"]
    assert cache["z", 1].shape == (2, 6, 4, 8)
    _, cache = model.run_with_cache(tokens, names=["blocks.0.hook_resid_post"],
                                    grad_of=lambda logits: logits[:, -1, 3].sum())
    g = cache["blocks.0.hook_resid_post_grad"]
    # the gradient agrees with autograd through an explicit leaf
    resid = cache["blocks.0.hook_resid_post"].clone().requires_grad_(True)
    with model.hooks(fwd=[("blocks.0.hook_resid_post", lambda x, h: resid)]):
        model(tokens)[:, -1, 3].sum().backward()
    assert torch.allclose(g, resid.grad, atol=1e-6)


def test_run_with_cache_accepts_transformerlens_names_filter() -> None:
    model = tiny_model()
    tokens = torch.randint(0, 50, (2, 6))
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    assert sorted(cache) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    with pytest.raises(ConfigError, match="not both"):
        model.run_with_cache(tokens, names=["blocks.0.hook_resid_post"], names_filter="blocks.0.hook_resid_post")


def test_grad_of_that_is_not_a_scalar_tensor_is_a_clear_error() -> None:
    model = tiny_model()
    tokens = torch.randint(0, 50, (2, 6))
    with pytest.raises(ShapeError, match=r"scalar \(one element\), got shape \(2, 50\).*\.sum\(\)"):
        model.run_with_cache(tokens, names=["blocks.0.hook_resid_post"], grad_of=lambda lg: lg[:, -1])
    with pytest.raises(ConfigError, match="scalar tensor computed from the output, got float"):
        model.run_with_cache(tokens, names=["blocks.0.hook_resid_post"], grad_of=lambda lg: 1.0)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match="does not depend on the output"):
        model.run_with_cache(tokens, names=["blocks.0.hook_resid_post"], grad_of=lambda lg: torch.tensor(1.0))
    assert all(p.grad is None for p in model.parameters())
    assert not any(hp.fwd_fns or hp.bwd_fns for hp in model.hook_dict.values())  # the hooks were removed


def test_stop_at_layer_returns_residual() -> None:
    model = tiny_model()
    tokens = torch.randint(0, 50, (1, 4))
    _, cache = model.run_with_cache(tokens, names=["blocks.1.hook_resid_pre"])
    out = model(tokens, stop_at_layer=1)
    assert torch.allclose(out, cache["blocks.1.hook_resid_pre"])
    with pytest.raises(ConfigError, match=r"stop_at_layer must be in \[0, 2\]"):
        model(tokens, stop_at_layer=5)


def test_bad_tokens_give_clear_errors() -> None:
    model = tiny_model()
    with pytest.raises(TokenError, match=r"token ids must be in \[0, 50\)"):
        model(torch.tensor([[1, 50]]))
    with pytest.raises(TokenError, match="exceeds the model's n_ctx=32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(TokenError, match="dtype"):
        model(torch.zeros(1, 3))
    with pytest.raises(ShapeError, match="expected shape"):
        model(torch.zeros(1, 2, 3, dtype=torch.long))


def test_inconsistent_config_dims_are_rejected() -> None:
    with pytest.raises(ConfigError, match="must divide n_heads"):
        AttentionConfig(n_heads=4, d_head=8, n_kv_heads=3)
    with pytest.raises(ConfigError, match="d_model must be a positive int"):
        ModelConfig(d_model=0, n_layers=1, d_vocab=5, n_ctx=4, attention=AttentionConfig(n_heads=1, d_head=2))


def test_left_padding_gives_same_logits_as_unpadded() -> None:
    for kind in ("llama", "gpt2"):
        model = tiny_model(kind)
        a = torch.randint(3, 50, (1, 6))
        b = torch.randint(3, 50, (1, 4))
        batch = torch.cat([a, torch.cat([torch.zeros(1, 2, dtype=torch.long), b], 1)])
        mask = torch.ones_like(batch)
        mask[1, :2] = 0
        with torch.no_grad():
            out = model(batch, attention_mask=mask)
            assert torch.allclose(out[0], model(a)[0], atol=1e-5)
            assert torch.allclose(out[1, 2:], model(b)[0], atol=1e-5)


@pytest.mark.parametrize("kind", FAMILY_KINDS)
def test_save_load_round_trip_is_exact(kind: str, tmp_path) -> None:
    model = tiny_model(kind)
    model.save(tmp_path)
    loaded = HookedTransformer.load(tmp_path)
    tokens = torch.randint(0, 50, (2, 5))
    with torch.no_grad():
        assert torch.equal(model(tokens), loaded(tokens))
    assert loaded.cfg == model.cfg


def test_corrupted_or_missing_files_are_clear(tmp_path) -> None:
    with pytest.raises(ModelFileError, match="config.json"):
        HookedTransformer.load(tmp_path)
    tiny_model().save(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        HookedTransformer.load(tmp_path)
    tiny_model().save(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["d_model"] = 64
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="wrong shapes"):
        HookedTransformer.load(tmp_path)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "neox"])
def test_run_blocks_resumes_a_forward_pass(kind: str) -> None:
    from mechscope.models.components.attention import KVCache

    model = tiny_model(kind)
    tokens = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        full = model(tokens, stop_at_layer=2)
        mid = model(tokens, stop_at_layer=1)
        assert torch.allclose(model.run_blocks(mid, 1), full, atol=1e-6)
        # later positions only, continuing a cache of the first 5 positions
        kv = KVCache(model.cfg.n_layers)
        model(tokens[:, :5], past_kv=kv)
        rest = model.run_blocks(mid[:, 5:], 1, past_kv=kv)
        assert torch.allclose(rest, full[:, 5:], atol=1e-5)
    with pytest.raises(ConfigError, match="start_layer"):
        model.run_blocks(mid, 3)


def test_fused_qkv_cache_sees_in_place_weight_edits() -> None:
    model = tiny_model("llama")
    tokens = torch.randint(0, 50, (1, 6))
    with torch.no_grad():
        before = model(tokens)
        model.blocks[0].attn.W_K.mul_(2.0)
        after = model(tokens)
        fresh = HookedTransformer(model.cfg)
        fresh.load_state_dict(model.state_dict())
        assert not torch.allclose(before, after)
        assert torch.allclose(after, fresh(tokens), atol=1e-6)


def test_shortformer_positions_enter_queries_and_keys_only() -> None:
    """Shortformer: the residual holds no positions; q/k = (ln1(resid) + W_pos[p]) W + b, v = ln1(resid) W_V + b."""
    model = tiny_model("shortformer")
    tokens = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(1))
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], cache["hook_embed"])
    pos = model.W_pos[:7]
    torch.testing.assert_close(cache["hook_pos_embed"], pos.expand(2, -1, -1))
    ln1 = model.blocks[0].ln1
    x = cache["blocks.0.ln1.hook_normalized"] * ln1.w + ln1.b  # hook_normalized is before the affine (TL)
    attn = model.blocks[0].attn
    q = torch.einsum("bpd,hde->bphe", x + pos, attn.W_Q)
    v = torch.einsum("bpd,hde->bphe", x, attn.W_V)
    torch.testing.assert_close(cache["blocks.0.attn.hook_q"], q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache["blocks.0.attn.hook_k"], torch.einsum("bpd,hde->bphe", x + pos, attn.W_K),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache["blocks.0.attn.hook_v"], v, rtol=1e-5, atol=1e-5)
    # the unhooked forward equals the hooked one, and the positions matter
    logits = model(tokens)
    torch.testing.assert_close(logits, model.run_with_hooks(tokens, fwd=[("blocks.1.attn.hook_q", lambda t, h: None)]))
    with torch.no_grad():
        model.pos_embed.W_pos.zero_()
    assert not torch.allclose(model(tokens), logits, atol=1e-4)
