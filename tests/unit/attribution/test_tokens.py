"""Token attributions: our IG equals captum's, completeness/efficiency axioms hold, clear errors."""

from __future__ import annotations

import pytest
import torch

from mechscope.attribution.tokens import (
    EmbedRunner,
    answer_metric,
    attribute_tokens,
    integrated_gradients,
    single_token,
    spearman,
)
from mechscope.errors import ConfigError, TokenError
from mechscope.tokens import Tokenizer
from tests.conftest import tiny_model

TOKENS = torch.tensor([[1, 7, 3, 12, 9, 4]])


@pytest.fixture(scope="module")
def model64():
    return tiny_model("llama", seed=3).double()


def _captum_forward(model, metric):
    def fwd(emb):
        toks = TOKENS.expand(emb.shape[0], -1)
        with model.hooks(fwd=[("hook_embed", lambda x, hook: emb)]):
            return metric(model(toks)[:, -1])
    return fwd


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_middle", "riemann_right"])
def test_ig_equals_captum_integrated_gradients(model64, rule):
    captum_attr = pytest.importorskip("captum.attr")
    metric = answer_metric(5, 11)
    runner = EmbedRunner(model64, TOKENS, metric)
    ours = integrated_gradients(runner, n_steps=20, rule=rule)
    ig = captum_attr.IntegratedGradients(_captum_forward(model64, metric))
    emb = model64.embed(TOKENS).detach()
    ref = ig.attribute(emb, baselines=torch.zeros_like(emb), n_steps=20, method=rule).sum(-1)[0]
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)
    assert ours.abs().max() > 1e-3  # not trivially zero


def test_ig_with_baseline_token_equals_captum_layer_ig(model64):
    captum_attr = pytest.importorskip("captum.attr")
    metric = answer_metric(8)
    out = attribute_tokens(model64, TOKENS, metric, "ig", baseline=0, n_steps=16)
    lig = captum_attr.LayerIntegratedGradients(lambda t: metric(model64(t)[:, -1]), model64.embed)
    ref = lig.attribute(TOKENS, baselines=torch.zeros_like(TOKENS), n_steps=16).sum(-1)[0]
    assert torch.allclose(out.attributions.double(), ref, atol=1e-5, rtol=0)


def test_ig_completeness_and_fixed_positions(model64):
    out = attribute_tokens(model64, TOKENS, answer_metric(5, 11), "ig", n_steps=64, fixed=[0], baseline=0)
    assert out.attributions[0] == 0
    gap = out.metric_full - out.metric_baseline
    assert abs(gap) > 1e-2
    assert abs(float(out.attributions.sum()) - gap) < 1e-6 * max(1.0, abs(gap))


def test_shapley_efficiency_and_exactness_on_additive_metric(model64):
    metric = answer_metric(5, 11)
    out = attribute_tokens(model64, TOKENS, metric, "shapley", n_samples=6, fixed=[0])
    assert out.attributions[0] == 0
    assert abs(float(out.attributions.sum()) - (out.metric_full - out.metric_baseline)) < 1e-9
    # a model-free check: with an additive "model" Shapley values equal each token's own effect
    patch = attribute_tokens(model64, TOKENS[:, :2], metric, "patch")
    shap = attribute_tokens(model64, TOKENS[:, :2], metric, "shapley", n_samples=8)
    # two tokens: Shapley = average of the two orders; patch = removal effect; they agree on the sum
    assert abs(float(shap.attributions.sum()) - float(patch.metric_full - patch.metric_baseline)) < 1e-9


def test_shapley_equals_captum_exact_shapley_for_all_orders(model64):
    captum_attr = pytest.importorskip("captum.attr")
    toks = TOKENS[:, :4]
    metric = answer_metric(5)
    # all 24 orders are sampled with high probability in 400 samples; compare against captum's exact values
    ours = attribute_tokens(model64, toks, metric, "shapley", n_samples=400, seed=1).attributions.double()
    emb = model64.embed(toks).detach()

    def fwd(e):
        with model64.hooks(fwd=[("hook_embed", lambda x, hook: e)]):
            return metric(model64(toks.expand(e.shape[0], -1))[:, -1])

    mask = torch.arange(4)[None, :, None].expand(1, 4, emb.shape[-1]).contiguous()
    ref = captum_attr.ShapleyValues(fwd).attribute(emb, baselines=torch.zeros_like(emb), feature_mask=mask)
    ref = ref[0, :, 0].double()  # captum accumulates in float32
    assert torch.allclose(ours.sum(), ref.sum(), atol=1e-5)
    assert spearman(ours, ref) > 0.7
    assert (ours - ref).abs().max() < 0.25 * ref.abs().max()


def test_patch_and_lime_agree_in_rank_on_the_tiny_model(model64):
    metric = answer_metric(5, 11)
    patch = attribute_tokens(model64, TOKENS, metric, "patch", fixed=[0])
    lime = attribute_tokens(model64, TOKENS, metric, "lime", n_samples=256, fixed=[0])
    assert patch.attributions[0] == 0 and lime.attributions[0] == 0
    assert torch.isfinite(lime.attributions).all()
    assert spearman(patch.attributions[1:], lime.attributions[1:]) > 0.0
    js = lime.to_json()
    assert set(js) >= {"tokens", "attributions", "method", "wall_seconds"} and js["method"] == "lime"


def test_bad_inputs_get_clear_errors(model64):
    tok = Tokenizer.words(["a", "b", "Paris"], bos="<s>")
    with pytest.raises(TokenError, match="answer.*2 tokens"):
        single_token(tok, "a b")
    with pytest.raises(ConfigError, match="allowed: ig, shapley, lime, patch"):
        attribute_tokens(model64, TOKENS, answer_metric(1), "saliency")
    with pytest.raises(ConfigError, match="outside the prompt"):
        attribute_tokens(model64, TOKENS, answer_metric(1), "patch", fixed=[9])
    with pytest.raises(ConfigError, match="n_samples"):
        attribute_tokens(model64, TOKENS, answer_metric(1), "lime", n_samples=3)


def test_method_comparison_table_on_a_word_model():
    from mechscope.attribution.study import compare_methods
    from mechscope.tokens import Tokenizer

    model = tiny_model("gpt2", seed=6)
    model.tokenizer = Tokenizer.words([f"w{i}" for i in range(49)], bos="<s>")
    res = compare_methods(model, baseline=0, n_steps=8, shapley_samples=4, lime_samples=24,
                          ioi=[("w1 w2 w3 w2 w4", "w1", "w2")], facts=[("w5 w6 w7", "w8")])
    assert [r["task"] for r in res["table"]] == ["ioi"] * 3 + ["facts"] * 3
    for r in res["prompts"]:
        assert r["attributions"]["patch"][0] == 0.0  # BOS fixed
        assert abs(r["ig_completeness_gap"]) < 0.05 * max(1.0, abs(r["metric_full"] - r["metric_baseline"]))
        assert -1 <= r["spearman_shapley"] <= 1


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_constant_prefix_runs_once_and_changes_nothing(kind):
    """Leading positions equal to their baseline (fixed, or the baseline token itself) run once through the KV
    cache; IG and masked runs equal the full recomputation (rotary and learned positions)."""
    model = tiny_model(kind, seed=6).double()
    toks = torch.tensor([[1, 2, 7, 3, 12, 9]])  # baseline token 2 at position 1: prefix = fixed 0 + position 1
    metric = answer_metric(5, 11)
    runner = EmbedRunner(model, toks, metric, baseline=2, fixed=[0])
    assert runner.prefix == 2
    full = EmbedRunner(model, toks, metric, baseline=2, fixed=[0])
    full.prefix = 0
    assert torch.allclose(integrated_gradients(runner, 8), integrated_gradients(full, 8), atol=1e-10)
    masks = torch.bernoulli(torch.full((5, 6), 0.5), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(runner.run_masks(masks, 3), full.run_masks(masks, 3), atol=1e-10)
    assert runner.run_masks(masks, 3).std() > 0  # the masks do change the metric
    assert EmbedRunner(model, toks, metric, baseline=2, fixed=[0], readout=0).prefix == 0  # readout stays in
