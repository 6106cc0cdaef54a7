"""QK attribution on Gemma-3 / Qwen3-shaped tiny models: q/k norms (frozen per head and position), post-sublayer
norms, grouped-query heads and sliding-window layers with their own rotary base."""

from __future__ import annotations

import pytest
import torch

from mechscope.attribution.qk import qk_attribution
from mechscope.dictionaries.transcoder import Transcoder, TranscoderConfig
from mechscope.errors import ConfigError
from tests.norm_models import gemma_like

TOKS = torch.tensor([1, 8, 3, 12, 9, 4, 20, 7])


def _transcoders():
    out = []
    for i in (0, 1):
        t = Transcoder(TranscoderConfig(d_in=32, d_out=32, d_sae=16, dtype="float64", skip=True,
                                        hook_name=f"blocks.{i}.ln2.hook_normalized",
                                        target_hook_name=f"blocks.{i}.hook_mlp_out"))
        g = torch.Generator().manual_seed(10 + i)
        with torch.no_grad():
            for p in t.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
        out.append(t)
    return out


@pytest.mark.parametrize(("layer", "head", "q", "k"), [(1, 3, 7, 1), (2, 2, 6, 4), (2, 1, 5, 5), (0, 0, 7, 4)])
def test_qk_terms_sum_to_the_score_with_qk_and_post_norms(layer, head, q, k):
    model = gemma_like()
    assert model.cfg.attention.is_local(layer) == (layer != 1)
    res = qk_attribution(model, TOKS, _transcoders(), layer=layer, head=head, query_pos=q, key_pos=k)
    _, cache = model.run_with_cache(TOKS[None], names=[f"blocks.{layer}.attn.hook_attn_scores"])
    score = float(cache[f"blocks.{layer}.attn.hook_attn_scores"][0, head, q, k])
    assert res.score == pytest.approx(score, abs=1e-12) and abs(score) > 1e-2
    assert float(res.terms.sum()) == pytest.approx(score, abs=1e-9)


def test_qwen3_shape_with_qkv_biases():
    """q/k norms without window or post-norms; the projection biases pass through the frozen q/k norm too."""
    model = gemma_like(seed=8, post_sublayer=False, sliding_window=None, global_every=None, qkv_bias=True)
    res = qk_attribution(model, TOKS, _transcoders(), layer=2, head=1, query_pos=7, key_pos=0)
    assert float(res.terms.sum()) == pytest.approx(res.score, abs=1e-9) and abs(res.score) > 1e-2
    assert abs(float(res.terms[:, -1].sum())) > 1e-3  # the key bias row carries a share


def test_the_q_and_k_norm_weights_reach_the_terms():
    """Without freezing the q/k norms the terms would miss the score: the norms are not near the identity."""
    model = gemma_like()
    res = qk_attribution(model, TOKS, _transcoders(), layer=1, head=3, query_pos=7, key_pos=1)
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.q_norm.w.mul_(1.5)
    again = qk_attribution(model, TOKS, _transcoders(), layer=1, head=3, query_pos=7, key_pos=1)
    assert float(again.terms.sum()) == pytest.approx(again.score, abs=1e-9)
    assert abs(again.score - res.score) > 1e-3  # q_norm's weight reaches the score (and the terms follow)


def test_keys_outside_the_sliding_window_are_refused():
    model = gemma_like()
    with pytest.raises(ConfigError, match="sliding window"):
        qk_attribution(model, TOKS, _transcoders(), layer=0, head=0, query_pos=7, key_pos=3)
    res = qk_attribution(model, TOKS, _transcoders(), layer=1, head=0, query_pos=7, key_pos=3)  # a global layer
    assert float(res.terms.sum()) == pytest.approx(res.score, abs=1e-9)


def test_attribution_graph_is_exact_on_the_gemma_shape():
    """The local replacement model freezes every norm scale (ln1_post, ln2_post, q/k norms included): edges plus
    constants still add up to every target's value."""
    from mechscope.attribution.graph import build_graph

    graph = build_graph(gemma_like(), TOKS, _transcoders(), batch_size=32)
    assert graph.n_features > 5 and graph.reconstruction_error() < 1e-6  # float32 adjacency
