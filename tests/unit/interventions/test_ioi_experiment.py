"""The IOI case-study code path on a tiny random model with a word tokenizer (numbers are meaningless here;
the real run is docs/ioi.md), plus a closed-form check of head DLA."""

from __future__ import annotations

import json

import torch

from mechscope.experiments.ioi import IOIConfig, behaviour, circuit, head_dla
from mechscope.metrics import logit_diff
from mechscope.models.config import AttentionConfig, ModelConfig, NormConfig
from mechscope.models.transformer import HookedTransformer
from tests.unit.data.test_ioi_prompts import word_tokenizer


def tiny(tok, norm: str = "rmsnorm") -> HookedTransformer:
    cfg = ModelConfig(d_model=16, n_layers=2, d_vocab=tok.vocab_size, n_ctx=24,
                      attention=AttentionConfig(n_heads=2, d_head=8), norm=NormConfig(kind=norm))
    return HookedTransformer(cfg, seed=0, tokenizer=tok).eval()


def test_head_dla_sums_to_logit_diff_without_norm():
    tok = word_tokenizer()
    model = tiny(tok, norm="none")
    tokens = torch.randint(0, tok.vocab_size, (3, 7))
    a, w = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    dla = head_dla(model, tokens, a, w)
    du = (model.W_U[:, a] - model.W_U[:, w]).detach()
    resid0 = (model.W_E[tokens[:, -1]] + model.W_pos[6]).detach()  # embeddings' direct term
    direct0 = torch.einsum("bd,db->b", resid0, du).mean()
    with torch.no_grad():
        total = logit_diff(model(tokens)[:, -1], a, w).mean()
    torch.testing.assert_close(dla.sum() + direct0, total, atol=1e-5, rtol=1e-5)


def test_circuit_runs_end_to_end(tmp_path):
    tok = word_tokenizer()
    model = tiny(tok)
    cfg = IOIConfig(out_dir=str(tmp_path), n_per_template=2, n_patch=2, top_k=2, n_ablate=1, n_path_senders=2)
    b = behaviour(model, cfg)
    assert b["n_prompts"] == 16 and 0.0 <= b["accuracy"] <= 1.0
    c = circuit(model, cfg, tmp_path)
    json.dumps(c)
    assert len(c["name_movers_dla"]) == 2 and len(c["backup"]["compensating_heads"]) == 2
    assert all((tmp_path / f).is_file() for f in ("resid.png", "heads.png", "dla.png"))


def test_head_dla_with_post_sublayer_norms_sums_to_each_layers_attn_out():
    """Gemma 2/3 shape: a layer's heads' DLA (each through ln1_post at its frozen scale) is its hook_attn_out's."""
    tok = word_tokenizer()
    cfg = ModelConfig(d_model=16, n_layers=2, d_vocab=tok.vocab_size, n_ctx=24, attention=AttentionConfig(
        n_heads=2, d_head=8), norm=NormConfig(kind="rmsnorm", post_sublayer=True))
    model = HookedTransformer(cfg, seed=0, tokenizer=tok).eval()
    with torch.no_grad():
        for blk in model.blocks:
            blk.ln1_post.w.mul_(torch.linspace(0.5, 2.0, 16))
    tokens = torch.randint(0, tok.vocab_size, (3, 7), generator=torch.Generator().manual_seed(0))
    a, w = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    dla = head_dla(model, tokens, a, w)
    _, cache = model.run_with_cache(tokens)
    final = cache["blocks.1.hook_resid_post"][:, -1]
    scale = (final.pow(2).mean(-1) + cfg.norm.eps).sqrt()
    direction = (model.W_U[:, a] - model.W_U[:, w]).T.detach() * model.ln_final.w.detach()
    for layer in range(2):
        out = cache[f"blocks.{layer}.hook_attn_out"][:, -1]
        want = ((out * direction).sum(-1) / scale).mean()
        torch.testing.assert_close(dla[layer].sum(), want, atol=1e-5, rtol=1e-5)
