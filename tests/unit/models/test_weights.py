"""Weight transforms leave log_softmax(logits) unchanged, produce consistent configs, and never mutate input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mechscope.errors import ConfigError
from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig, PositionalConfig
from mechscope.models.transformer import HookedTransformer
from mechscope.models.weights import (
    Weights,
    apply_transform,
    center_unembed,
    center_writing_weights,
    fold_layer_norm,
    fold_value_biases,
    process_weights,
)

torch.set_num_threads(1)


def tiny_configs() -> dict[str, ModelConfig]:
    """Small configs of each family (also used by the cache-analysis tests)."""
    base = dict(d_model=16, n_layers=2, d_vocab=23, n_ctx=12)
    return {
        "gpt2": ModelConfig(**base, attention=AttentionConfig(n_heads=4, d_head=4, qkv_bias=True, out_bias=True),
                            mlp=MLPConfig(d_mlp=32, act="gelu_new", bias=True), norm=NormConfig(kind="layernorm"),
                            positional=PositionalConfig(kind="learned")),
        "ln_nobias_linears": ModelConfig(**base, attention=AttentionConfig(n_heads=4, d_head=4),
                                         mlp=MLPConfig(d_mlp=32, act="relu"), norm=NormConfig(kind="layernorm"),
                                         positional=PositionalConfig(kind="learned"), unembed_bias=False),
        "llama": ModelConfig(**base, attention=AttentionConfig(n_heads=4, d_head=4, n_kv_heads=2),
                             mlp=MLPConfig(kind="gated", d_mlp=24, act="silu"), norm=NormConfig(kind="rmsnorm"),
                             positional=PositionalConfig(kind="rotary")),
        "qwen2": ModelConfig(**base, attention=AttentionConfig(n_heads=4, d_head=4, n_kv_heads=2, qkv_bias=True),
                             mlp=MLPConfig(kind="gated", d_mlp=24, act="silu"), norm=NormConfig(kind="rmsnorm"),
                             positional=PositionalConfig(kind="rotary")),
        "neox": ModelConfig(**base, attention=AttentionConfig(n_heads=2, d_head=8, qkv_bias=True, out_bias=True),
                            mlp=MLPConfig(d_mlp=32, act="gelu", bias=True), norm=NormConfig(kind="layernorm"),
                            positional=PositionalConfig(kind="rotary", rotary_dim=4), parallel_attn_mlp=True,
                            unembed_bias=True),
        "attn_only_nonorm": ModelConfig(**base, attention=AttentionConfig(n_heads=4, d_head=4, qkv_bias=True),
                                        mlp=None, norm=NormConfig(kind="none"),
                                        positional=PositionalConfig(kind="learned"), unembed_bias=True),
    }


def random_model(cfg: ModelConfig, seed: int = 0) -> HookedTransformer:
    """A seeded model whose norm weights and all biases are random too (init's 1/0 would hide bugs)."""
    model = HookedTransformer(cfg, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "w":
                p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=gen))
            elif not leaf.startswith("W_"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    return model


def tokens(cfg: ModelConfig) -> torch.Tensor:
    return torch.randint(0, cfg.d_vocab, (2, 10), generator=torch.Generator().manual_seed(3))


def logprobs(model: HookedTransformer, toks: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(toks), dim=-1)


CONFIGS = tiny_configs()
TRANSFORMS = {
    "fold_layer_norm": fold_layer_norm,
    "center_writing_weights": center_writing_weights,
    "center_unembed": center_unembed,
    "fold_value_biases": fold_value_biases,
}


def applicable(name: str, cfg: ModelConfig) -> bool:
    if name == "fold_layer_norm":
        return cfg.norm.kind != "none"
    if name == "center_writing_weights":
        return cfg.norm.kind == "layernorm"
    return True


CASES = [(c, t) for c in CONFIGS for t in TRANSFORMS if applicable(t, CONFIGS[c])]


@pytest.mark.parametrize(("cfg_name", "t_name"), CASES)
def test_transform_preserves_log_softmax(cfg_name: str, t_name: str) -> None:
    model = random_model(CONFIGS[cfg_name])
    toks = tokens(model.cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new = apply_transform(model, TRANSFORMS[t_name])
    torch.testing.assert_close(logprobs(new, toks), logprobs(model, toks), atol=1e-4, rtol=0)
    for k, v in model.state_dict().items():  # the source model is untouched
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("cfg_name", list(CONFIGS))
def test_process_weights_composition(cfg_name: str) -> None:
    model = random_model(CONFIGS[cfg_name])
    toks = tokens(model.cfg)
    new = process_weights(model)
    torch.testing.assert_close(logprobs(new, toks), logprobs(model, toks), atol=1e-4, rtol=0)
    # something actually changed (otherwise this test could not fail)
    changed = [k for k, v in new.state_dict().items()
               if k not in model.state_dict() or not torch.equal(v, model.state_dict()[k])]
    assert changed


def test_fold_layer_norm_layernorm_config_and_params() -> None:
    model = random_model(CONFIGS["ln_nobias_linears"])
    new = apply_transform(model, fold_layer_norm)
    cfg = new.cfg
    assert cfg.norm.bias is False and cfg.attention.qkv_bias and cfg.mlp is not None and cfg.mlp.bias
    assert cfg.unembed_bias
    sd = new.state_dict()
    assert not any(k.endswith(".b") and ("ln" in k) for k in sd)
    for k in [k for k in sd if k.endswith(".w")]:
        assert torch.equal(sd[k], torch.ones_like(sd[k]))
    # reading weights are centred over d_model (LayerNorm output has zero mean)
    assert sd["blocks.0.attn.W_Q"].mean(1).abs().max() < 1e-6
    assert sd["unembed.W_U"].mean(0).abs().max() < 1e-6
    # the residual stream is unchanged by folding
    toks = tokens(model.cfg)
    _, c0 = model.run_with_cache(toks, names=["blocks.1.hook_resid_post"])
    _, c1 = new.run_with_cache(toks, names=["blocks.1.hook_resid_post"])
    torch.testing.assert_close(c0["blocks.1.hook_resid_post"], c1["blocks.1.hook_resid_post"], atol=1e-5, rtol=0)


def test_fold_layer_norm_independent_formula_rmsnorm() -> None:
    cfg = CONFIGS["llama"]
    model = random_model(cfg)
    sd = model.state_dict()
    w_state, new_cfg = fold_layer_norm(dict(sd), cfg)
    assert new_cfg == cfg  # RMSNorm has no bias: nothing new needed
    expected = sd["blocks.1.ln2.w"][:, None] * sd["blocks.1.mlp.W_gate"]
    torch.testing.assert_close(w_state["blocks.1.mlp.W_gate"], expected)
    torch.testing.assert_close(w_state["unembed.W_U"], sd["ln_final.w"][:, None] * sd["unembed.W_U"])


def test_center_writing_weights_centres_and_rejects_rmsnorm() -> None:
    model = random_model(CONFIGS["gpt2"])
    state, _ = center_writing_weights(model.state_dict(), model.cfg)
    for k in ("embed.W_E", "pos_embed.W_pos", "blocks.1.attn.W_O", "blocks.0.mlp.b_out"):
        assert state[k].mean(-1).abs().max() < 1e-6, k
    for name in ("llama", "attn_only_nonorm"):
        m = random_model(CONFIGS[name])
        with pytest.raises(ConfigError, match="LayerNorm"):
            center_writing_weights(m.state_dict(), m.cfg)


def test_center_unembed_centres() -> None:
    model = random_model(CONFIGS["neox"])
    state, _ = center_unembed(model.state_dict(), model.cfg)
    assert state["unembed.W_U"].mean(-1).abs().max() < 1e-6
    assert state["unembed.b_U"].mean().abs() < 1e-6


def test_fold_value_biases_gqa_formula_and_padding() -> None:
    cfg = CONFIGS["qwen2"]
    model = random_model(cfg)
    sd = model.state_dict()
    state, new_cfg = fold_value_biases(dict(sd), cfg)
    assert new_cfg.attention.out_bias and not cfg.attention.out_bias
    # independent: loop over query heads, head h reads kv head h // (n_heads / n_kv_heads)
    rep = cfg.n_heads // cfg.attention.kv_heads
    b_O = sum(sd["blocks.0.attn.b_V"][h // rep] @ sd["blocks.0.attn.W_O"][h] for h in range(cfg.n_heads))
    torch.testing.assert_close(state["blocks.0.attn.b_O"], b_O)
    assert torch.equal(state["blocks.0.attn.b_V"], torch.zeros_like(sd["blocks.0.attn.b_V"]))
    # still exact with a left-padded batch (pattern rows still sum to one)
    new = apply_transform(model, fold_value_biases)
    toks = tokens(cfg)
    mask = torch.ones_like(toks)
    mask[0, :3] = 0
    with torch.no_grad():
        a = torch.log_softmax(model(toks, attention_mask=mask), -1)
        b = torch.log_softmax(new(toks, attention_mask=mask), -1)
    torch.testing.assert_close(a[mask.bool()], b[mask.bool()], atol=1e-4, rtol=0)


def test_fold_value_biases_without_biases_is_identity() -> None:
    model = random_model(CONFIGS["llama"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state, cfg = fold_value_biases(model.state_dict(), model.cfg)
    assert cfg == model.cfg and state.keys() == before.keys()
    assert all(torch.equal(state[k], v) for k, v in before.items())  # values, not only names


def test_errors_and_purity() -> None:
    m = random_model(CONFIGS["attn_only_nonorm"])
    with pytest.raises(ConfigError, match="no norms"):
        fold_layer_norm(m.state_dict(), m.cfg)
    gated_ln = dataclasses.replace(CONFIGS["llama"], norm=NormConfig(kind="layernorm"))
    m2 = random_model(gated_ln)
    with pytest.raises(ConfigError, match="gated"):
        fold_layer_norm(m2.state_dict(), m2.cfg)
    # gated MLP + LayerNorm without bias is foldable
    gated_ln_nb = dataclasses.replace(CONFIGS["llama"], norm=NormConfig(kind="layernorm", bias=False))
    m3 = random_model(gated_ln_nb)
    toks = tokens(gated_ln_nb)
    torch.testing.assert_close(logprobs(apply_transform(m3, fold_layer_norm), toks), logprobs(m3, toks),
                               atol=1e-4, rtol=0)


def test_transform_returns_weights_and_keeps_dtype() -> None:
    model = random_model(CONFIGS["gpt2"]).to(torch.float64)
    out = fold_layer_norm(model.state_dict(), model.cfg)
    assert isinstance(out, Weights)
    new = apply_transform(model, fold_layer_norm)
    assert next(new.parameters()).dtype == torch.float64
    toks = tokens(model.cfg)
    torch.testing.assert_close(logprobs(new, toks), logprobs(model, toks), atol=1e-10, rtol=0)


def test_new_model_owns_its_parameters() -> None:
    model = random_model(CONFIGS["llama"])  # center_unembed leaves most tensors as they were
    new = apply_transform(model, center_unembed)
    params = dict(new.named_parameters())
    assert set(params) == set(dict(model.named_parameters()))
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in params.values())
    with torch.no_grad():
        params["blocks.0.attn.W_Q"].add_(1.0)
    assert not torch.equal(params["blocks.0.attn.W_Q"], model.blocks[0].attn.W_Q)
    new(tokens(new.cfg)).sum().backward()
    assert params["embed.W_E"].grad is not None
