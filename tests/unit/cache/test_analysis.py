"""Cache analyses against independent computations: sums to the residual, DLA vs logits, lens vs logits."""

from __future__ import annotations

import pytest
import torch

from mechscope.cache.activation_cache import ActivationCache
from mechscope.cache.analysis import (
    accumulated_resid,
    apply_ln_to_stack,
    decompose_resid,
    logit_attrs,
    logit_directions,
    logit_lens,
    stack_head_results,
)
from mechscope.errors import ConfigError, HookNameError, ShapeError
from mechscope.models.transformer import HookedTransformer
from mechscope.models.weights import apply_transform, fold_layer_norm
from tests.unit.models.test_weights import random_model, tiny_configs

torch.set_num_threads(1)
CONFIGS = tiny_configs()
FAMILIES = ["gpt2", "llama", "neox", "attn_only_nonorm", "qwen2"]


def run(name: str) -> tuple[HookedTransformer, torch.Tensor, torch.Tensor, ActivationCache]:
    model = random_model(CONFIGS[name])
    toks = torch.randint(0, model.cfg.d_vocab, (2, 7), generator=torch.Generator().manual_seed(1))
    logits, cache = model.run_with_cache(toks)
    return model, toks, logits, cache


@pytest.mark.parametrize("name", FAMILIES)
def test_decompose_resid_sums_to_residual(name: str) -> None:
    model, _, _, cache = run(name)
    n = model.cfg.n_layers
    full = decompose_resid(cache, model)
    torch.testing.assert_close(full.stack.sum(0), cache[f"blocks.{n - 1}.hook_resid_post"], atol=1e-5, rtol=0)
    part = decompose_resid(cache, model, layer=1, pos_slice=-1)
    assert part.stack.dim() == 3  # an int pos_slice drops the pos axis
    torch.testing.assert_close(part.stack.sum(0), cache["blocks.1.hook_resid_pre"][:, -1], atol=1e-5, rtol=0)
    expected = ["embed"] + (["pos_embed"] if model.cfg.positional.kind == "learned" else []) + ["0_attn_out"]
    if model.cfg.mlp is not None:
        expected.append("0_mlp_out")
    assert part.labels == expected


@pytest.mark.parametrize("name", FAMILIES)
def test_accumulated_resid(name: str) -> None:
    model, _, _, cache = run(name)
    acc = accumulated_resid(cache, model.cfg.n_layers)
    assert acc.labels == ["0_pre", "1_pre", "final_post"]
    torch.testing.assert_close(acc.stack[-1], cache["blocks.1.hook_resid_post"])
    # consecutive differences are the layers' outputs (an independent decomposition)
    dec = decompose_resid(cache, model)
    per_layer = 2 if model.cfg.mlp is not None else 1
    first = len(dec.labels) - per_layer * model.cfg.n_layers
    layer0 = dec.stack[first:first + per_layer].sum(0)
    torch.testing.assert_close(acc.stack[1] - acc.stack[0], layer0, atol=1e-5, rtol=0)
    one = accumulated_resid(cache, model.cfg.n_layers, layer=0, pos_slice=[0, 2])
    assert one.labels == ["0_pre"] and one.stack.shape == (1, 2, 2, model.cfg.d_model)


def test_accumulated_resid_mid() -> None:
    model, _, _, cache = run("gpt2")
    acc = accumulated_resid(cache, 2, incl_mid=True)
    assert acc.labels == ["0_pre", "0_mid", "1_pre", "1_mid", "final_post"]
    torch.testing.assert_close(acc.stack[3], cache["blocks.1.hook_resid_mid"])
    neox, _, _, neox_cache = run("neox")
    with pytest.raises(ConfigError, match="resid_mid"):
        accumulated_resid(neox_cache, 2, incl_mid=True)
    with pytest.raises(ConfigError, match="layer must be"):
        accumulated_resid(cache, 2, layer=3)


@pytest.mark.parametrize("name", ["gpt2", "llama", "neox"])
def test_stack_head_results_from_result_and_from_z_agree(name: str) -> None:
    model, _, _, cache = run(name)
    from_result = stack_head_results(cache, model)
    no_result = ActivationCache({k: v for k, v in cache.items() if not k.endswith("hook_result")})
    from_z = stack_head_results(no_result, model)
    assert from_result.labels == from_z.labels == [f"L{i}H{h}" for i in range(2) for h in range(model.cfg.n_heads)]
    torch.testing.assert_close(from_z.stack, from_result.stack, atol=1e-5, rtol=0)
    # heads of layer 1 plus b_O add up to that layer's attention output
    H = model.cfg.n_heads
    b_O = model.blocks[1].attn.b_O
    attn = from_z.stack[H:].sum(0) + (b_O.detach() if b_O is not None else 0)
    torch.testing.assert_close(attn, cache["blocks.1.hook_attn_out"], atol=1e-5, rtol=0)
    rem = stack_head_results(no_result, model, pos_slice=slice(2, 5), incl_remainder=True)
    assert rem.labels[-1] == "remainder"
    torch.testing.assert_close(rem.stack.sum(0), cache["blocks.1.hook_resid_post"][:, 2:5], atol=1e-5, rtol=0)
    assert stack_head_results(cache, model, layer=0).stack.shape[0] == 0


@pytest.mark.parametrize("name", ["gpt2", "llama", "attn_only_nonorm"])
def test_apply_ln_to_stack_reproduces_normalized(name: str) -> None:
    model, _, _, cache = run(name)
    final = accumulated_resid(cache, 2).stack[-1:]
    out = apply_ln_to_stack(final, cache, model)
    if model.cfg.norm.kind == "none":
        torch.testing.assert_close(out, final)
        return
    torch.testing.assert_close(out[0], cache["ln_final.hook_normalized"], atol=1e-5, rtol=0)
    pre1 = cache["blocks.1.hook_resid_pre"][None, :, 3]
    torch.testing.assert_close(apply_ln_to_stack(pre1, cache, model, layer=1, pos_slice=3)[0],
                               cache["blocks.1.ln1.hook_normalized"][:, 3], atol=1e-5, rtol=0)
    with pytest.raises(ShapeError, match="pos_slice"):
        apply_ln_to_stack(pre1, cache, model)  # stack was built with pos_slice=3


@pytest.mark.parametrize("name", ["gpt2", "llama", "neox", "attn_only_nonorm"])
def test_dla_of_full_stack_equals_logit_difference(name: str) -> None:
    model, toks, logits, cache = run(name)
    correct = torch.tensor([3, 5])
    wrong = torch.tensor([7, 1])
    # independent: logit difference from the model's own logits, minus the constant bias terms
    diff = logits[torch.arange(2), :, correct] - logits[torch.arange(2), :, wrong]  # [batch pos]
    dW = (model.W_U[:, correct] - model.W_U[:, wrong]).T.detach()  # [batch d_model]
    const = torch.zeros(2)
    if getattr(model.ln_final, "b", None) is not None:
        const = const + dW @ model.ln_final.b.detach()
    if model.unembed.b_U is not None:
        b_U = model.unembed.b_U.detach()
        const = const + b_U[correct] - b_U[wrong]
    expected = diff - const[:, None]
    dec = decompose_resid(cache, model)
    attrs = logit_attrs(dec.stack, cache, model, correct, wrong)
    assert attrs.shape == (len(dec.labels), 2, 7)
    torch.testing.assert_close(attrs.sum(0), expected, atol=1e-4, rtol=0)
    heads = stack_head_results(cache, model, incl_remainder=True)
    torch.testing.assert_close(logit_attrs(heads.stack, cache, model, correct, wrong).sum(0), expected,
                               atol=1e-4, rtol=0)
    # the same with explicit directions, and a pos slice
    dirs = logit_directions(model, correct, wrong)
    last = decompose_resid(cache, model, pos_slice=-1)
    got = logit_attrs(last.stack, cache, model, directions=dirs, pos_slice=-1)
    torch.testing.assert_close(got.sum(0), expected[:, -1], atol=1e-4, rtol=0)


def test_dla_per_head_unchanged_by_folding() -> None:
    model, toks, _, cache = run("gpt2")
    folded = apply_transform(model, fold_layer_norm)
    _, fcache = folded.run_with_cache(toks)
    correct, wrong = torch.tensor([3, 5]), torch.tensor([7, 1])
    a = logit_attrs(stack_head_results(cache, model).stack, cache, model, correct, wrong)
    b = logit_attrs(stack_head_results(fcache, folded).stack, fcache, folded, correct, wrong)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_logit_attrs_errors() -> None:
    model, _, _, cache = run("gpt2")
    stack = decompose_resid(cache, model).stack
    with pytest.raises(ConfigError, match="exactly one"):
        logit_attrs(stack, cache, model)
    with pytest.raises(ShapeError, match="prefix"):
        logit_attrs(stack, cache, model, torch.tensor([1, 2, 3]))
    with pytest.raises(HookNameError, match="not in the cache"):
        logit_attrs(stack, ActivationCache({}), model, 1)


@pytest.mark.parametrize("name", ["gpt2", "llama", "attn_only_nonorm"])
def test_logit_lens(name: str) -> None:
    model, toks, logits, cache = run(name)
    lens = logit_lens(cache, model, k=3, target=torch.tensor([4, 9]))
    assert lens.labels == ["0_pre", "1_pre", "final_post"]
    assert lens.logits.shape == (3, 2, 7, model.cfg.vocab_out)
    torch.testing.assert_close(lens.logits[-1], logits, atol=1e-5, rtol=0)
    # an intermediate row equals ln_final + unembed of the residual computed by stopping the model early
    with torch.no_grad():
        resid1 = model(toks, stop_at_layer=1)
        row1 = model.unembed(model.ln_final(resid1))
    torch.testing.assert_close(lens.logits[1], row1, atol=1e-5, rtol=0)
    probs = torch.softmax(logits, -1)
    assert torch.equal(lens.top_tokens[-1, ..., 0], logits.argmax(-1))
    torch.testing.assert_close(lens.top_probs[-1, ..., 0], probs.max(-1).values, atol=1e-6, rtol=0)
    assert lens.target_probs is not None
    torch.testing.assert_close(lens.target_probs[-1], probs[torch.arange(2), :, torch.tensor([4, 9])],
                               atol=1e-6, rtol=0)
    assert logit_lens(cache, model, pos_slice=-1).target_probs is None
