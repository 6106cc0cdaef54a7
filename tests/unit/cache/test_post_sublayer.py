"""Per-head terms of post-sublayer-norm models (Gemma 2/3): each head's result through ``ln1_post`` at the forward's
frozen scale, so a layer's heads sum to its ``hook_attn_out``."""

from __future__ import annotations

import torch

from mechscope.cache.analysis import stack_head_results
from mechscope.models.components.frozen_norm import frozen_norm
from mechscope.models.config import NormConfig
from tests.conftest import tiny_model
from tests.norm_models import gemma_like

TOKS = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(2))


def test_heads_sum_to_attn_out_with_post_norms() -> None:
    model = gemma_like()
    _, cache = model.run_with_cache(TOKS)
    n, H = model.cfg.n_layers, model.cfg.n_heads
    heads = stack_head_results(cache, model).stack.view(n, H, *TOKS.shape, -1)
    attn_out = torch.stack([cache[f"blocks.{i}.hook_attn_out"] for i in range(n)])
    assert (heads.sum(1) - attn_out).abs().max() < 1e-12  # float64 model; no b_O, RMSNorm: the heads alone
    raw = torch.stack([cache[f"blocks.{i}.attn.hook_result"] for i in range(n)]).movedim(-2, 1)
    assert (raw.sum(1) - attn_out).abs().max() > 1e-2  # the raw results do not sum to it
    full = stack_head_results(cache, model, incl_remainder=True)
    torch.testing.assert_close(full.stack.sum(0), cache[f"blocks.{n - 1}.hook_resid_post"], atol=1e-10, rtol=0)
    # from hook_z only (no cached ln1_post scale): the scale recomputed from the heads' sum gives the same terms
    z_only = {k: v for k, v in cache.items() if k.endswith("hook_z") or k.endswith("hook_resid_pre")}
    again = stack_head_results(type(cache)(z_only, model), model, pos_slice=-1).stack
    torch.testing.assert_close(again, stack_head_results(cache, model, pos_slice=-1).stack, atol=1e-12, rtol=0)


def test_layernorm_post_norm_with_output_bias() -> None:
    """LayerNorm ln1_post and b_O (GPT-2 shape): heads + the norm's share of b_O + its bias = attn_out."""
    model = tiny_model("gpt2", seed=3, norm=NormConfig(kind="layernorm", post_sublayer=True)).double()
    _, cache = model.run_with_cache(TOKS)
    n, H = model.cfg.n_layers, model.cfg.n_heads
    heads = stack_head_results(cache, model).stack.view(n, H, *TOKS.shape, -1).sum(1)
    for i, blk in enumerate(model.blocks):
        scale = cache[f"blocks.{i}.ln1_post.hook_scale"]
        rest = frozen_norm(blk.ln1_post, blk.attn.b_O.detach().expand_as(heads[i]), scale) + blk.ln1_post.b
        err = (heads[i] + rest - cache[f"blocks.{i}.hook_attn_out"]).abs().max()
        assert err < 1e-12, (i, float(err))


def test_models_without_post_norms_are_unchanged() -> None:
    model = gemma_like(post_sublayer=False)
    _, cache = model.run_with_cache(TOKS)
    got = stack_head_results(cache, model, layer=1).stack
    assert torch.equal(got, cache["blocks.0.attn.hook_result"].movedim(-2, 0))
