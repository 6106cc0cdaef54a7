"""Weight-only circuits on Gemma-3 / Qwen3-shaped models: q/k norm and attention post-norm weights are folded.

The norms' 1/rms scales depend on the activations, so the folded circuits equal the model only up to them. The
real-model checks below undo those scales with the forward's own ``hook_scale`` values (a single-token
sequence: the key is the query's own position, where the rotary rotation cancels, and the head attends only to
it); the others compare with a model whose norm weights were multiplied into W_Q / W_K / W_O by hand.
"""

from __future__ import annotations

import copy

import torch

from mechscope.analysis.weights import (
    composition_scores,
    copying_scores,
    head_weights,
    ov_circuit,
    qk_circuit,
)
from tests.norm_models import gemma_like


def _model(**kw) -> torch.nn.Module:
    """gemma_like with norm weights far from 1 (some negative), so a missing or misplaced fold shows."""
    model = gemma_like(**kw)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".w"):
                p.copy_(1 + 0.7 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _prefolded(model):
    """A copy whose q/k norm and ln1_post weights sit in W_Q / W_K / W_O and are themselves 1 (not an equivalent
    forward: the rms scales change; the weight-only circuits are what should agree)."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for blk in out.blocks:
            blk.attn.W_Q.mul_(blk.attn.q_norm.w)  # [h d e] * [e]: the output columns
            blk.attn.W_K.mul_(blk.attn.k_norm.w)
            blk.attn.q_norm.w.fill_(1.0)
            blk.attn.k_norm.w.fill_(1.0)
            blk.attn.W_O.mul_(blk.ln1_post.w)  # [h e d] * [d]
            blk.ln1_post.w.fill_(1.0)
    return out


def _norms_ignored(model):
    """A copy with the q/k norm and ln1_post weights set to 1 and nothing else changed (what skipping the fold gives)."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for blk in out.blocks:
            for w in (blk.attn.q_norm.w, blk.attn.k_norm.w, blk.ln1_post.w):
                w.fill_(1.0)
    return out


def test_qk_circuit_is_the_real_score_times_the_norm_scales():
    """Layer 0, every token as a one-token sequence: score = qk[h, v, v] / (s_ln1² rms(q) rms(k)) · embed_scale²."""
    model = _model()
    v = model.cfg.d_vocab
    names = ["blocks.0.attn.hook_attn_scores", "blocks.0.ln1.hook_scale", "blocks.0.attn.q_norm.hook_scale",
             "blocks.0.attn.k_norm.hook_scale"]
    _, cache = model.run_with_cache(torch.arange(v)[:, None], names=names)
    rep = model.cfg.n_heads // model.cfg.attention.kv_heads
    s1 = cache["blocks.0.ln1.hook_scale"][:, 0, 0]  # [v]
    sq = cache["blocks.0.attn.q_norm.hook_scale"][:, 0, :, 0]  # [v h]
    sk = cache["blocks.0.attn.k_norm.hook_scale"][:, 0, :, 0].repeat_interleave(rep, dim=1)  # [v h]
    score = cache["blocks.0.attn.hook_attn_scores"][:, :, 0, 0]  # [v h]
    undone = (score * sq * sk * s1[:, None] ** 2 / model.cfg.embed_scale ** 2).T  # [h v]
    qk = qk_circuit(model, 0).AB.diagonal(dim1=-2, dim2=-1)  # [h v]
    torch.testing.assert_close(qk, undone, rtol=1e-9, atol=1e-12)
    plain = qk_circuit(_norms_ignored(model), 0).AB.diagonal(dim1=-2, dim2=-1)
    assert (plain - undone).abs().max() > 0.1 * undone.abs().max()  # without the fold the test fails
    assert (torch.sign(plain) != torch.sign(undone)).any()  # ... even the signs


def test_ov_circuit_is_the_real_write_times_the_post_norm_scale():
    """Layer 0, one-token sequences (pattern 1 on itself): Σ_h OV[h, v, :] = attn_out · s_post · s_ln1 / embed_scale · W_U."""
    model = _model()
    v = model.cfg.d_vocab
    names = ["blocks.0.hook_attn_out", "blocks.0.ln1.hook_scale", "blocks.0.ln1_post.hook_scale"]
    _, cache = model.run_with_cache(torch.arange(v)[:, None], names=names)
    out = cache["blocks.0.hook_attn_out"][:, 0] * cache["blocks.0.ln1_post.hook_scale"][:, 0]
    out = out * cache["blocks.0.ln1.hook_scale"][:, 0] / model.cfg.embed_scale  # [v d_model]
    ov = ov_circuit(model, 0).AB.sum(0)  # [v v_out]
    W_U = model.W_U.detach()
    torch.testing.assert_close(ov, out @ W_U, rtol=1e-9, atol=1e-12)
    plain = ov_circuit(_norms_ignored(model), 0).AB.sum(0)
    assert (plain - out @ W_U).abs().max() > 0.1 * (out @ W_U).abs().max()


def test_folded_circuits_equal_a_prefolded_model_and_differ_from_ignoring_the_norms():
    model = _model()
    pre, plain = _prefolded(model), _norms_ignored(model)
    for layer in range(model.cfg.n_layers):
        torch.testing.assert_close(qk_circuit(model, layer).AB, qk_circuit(pre, layer).AB)
        torch.testing.assert_close(ov_circuit(model, layer).AB, ov_circuit(pre, layer).AB)
        assert not torch.allclose(qk_circuit(model, layer).AB, qk_circuit(plain, layer).AB, rtol=0.05)
        assert not torch.allclose(ov_circuit(model, layer).AB, ov_circuit(plain, layer).AB, rtol=0.05)
    a, b = copying_scores(model), copying_scores(pre)
    torch.testing.assert_close(a.eig_ratio, b.eig_ratio)
    assert (a.eig_ratio - copying_scores(plain).eig_ratio).abs().max() > 0.02


def test_composition_scores_follow_the_norm_weights():
    """Q/K/V composition of the folded model equals the pre-folded model's and moves when the norms are ignored."""
    model = _model()
    got, pre, plain = (composition_scores(m, baseline_samples=4) for m in (model, _prefolded(model),
                                                                           _norms_ignored(model)))
    for kind in "qkv":
        a, b, c = getattr(got, kind), getattr(pre, kind), getattr(plain, kind)
        torch.testing.assert_close(a, b, equal_nan=True)
        assert float((a - c).nan_to_num().abs().max()) > 0.02, kind


def test_models_without_these_norms_get_the_plain_weights():
    """No qk_norm, no post-norm: W_O is the model's, W_Q/W_K/W_V only carry ln1.w (the pre-existing fold)."""
    model = _model(post_sublayer=False, qk_norm=False)
    w = head_weights(model)
    assert torch.equal(w["W_O"], model.W_O.detach())
    ln1 = torch.stack([blk.ln1.w.detach() for blk in model.blocks])  # [l d]
    assert torch.equal(w["W_Q"], model.W_Q.detach() * ln1[:, None, :, None])
