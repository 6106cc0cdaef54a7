"""Circuits from the weights: composition scores vs brute force, copying eigenvalues, bigrams, skip-trigrams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechscope.analysis.weights import (
    SkipTrigram,
    bigram_correlation,
    bigram_logits,
    composition_baseline,
    composition_scores,
    copying_scores,
    ov_circuit,
    qk_circuit,
    skip_trigrams,
    top_pairs,
    verify_skip_trigrams,
)
from mechscope.models.config import AttentionConfig, ModelConfig, NormConfig, PositionalConfig
from mechscope.models.transformer import HookedTransformer
from tests.unit.analysis.handbuilt import handbuilt_induction_model


def _model(n_layers: int = 3, norm: str = "layernorm", n_kv: int | None = None, seed: int = 0, **kw) -> HookedTransformer:
    cfg = ModelConfig(d_model=24, n_layers=n_layers, d_vocab=kw.pop("d_vocab", 20), n_ctx=16,
                      attention=AttentionConfig(n_heads=4, d_head=6, n_kv_heads=n_kv), mlp=None,
                      norm=NormConfig(kind=norm), **kw)
    model = HookedTransformer(cfg, seed=seed)
    if norm != "none":
        with torch.no_grad():
            for blk in model.blocks:
                blk.ln1.w.uniform_(0.5, 1.5)
    return model


def _brute_force(model: HookedTransformer) -> dict[str, torch.Tensor]:
    """Full d_model x d_model matrices per head, loops everywhere (the independent oracle)."""
    n_l, n_h = model.cfg.n_layers, model.cfg.n_heads
    rep = n_h // model.cfg.attention.kv_heads
    ov, qk = {}, {}
    for layer in range(n_l):
        attn, w = model.blocks[layer].attn, torch.diag(model.blocks[layer].ln1.w.detach()).double()
        for h in range(n_h):
            wq, wk = attn.W_Q[h].detach().double(), attn.W_K[h // rep].detach().double()
            wv, wo = attn.W_V[h // rep].detach().double(), attn.W_O[h].detach().double()
            ov[layer, h] = w @ wv @ wo
            qk[layer, h] = (w @ wq) @ (w @ wk).T
    out = {k: torch.full((n_l, n_h, n_l, n_h), float("nan")) for k in "qkv"}
    for (la, ha), a in ov.items():
        for (lb, hb), b in qk.items():
            if la >= lb:
                continue
            for kind, prod, other in (("q", a @ b, b), ("k", a @ b.T, b), ("v", a @ ov[lb, hb], ov[lb, hb])):
                out[kind][la, ha, lb, hb] = prod.norm() / (a.norm() * other.norm())
    return out


@pytest.mark.parametrize("n_kv", [None, 2])
def test_composition_scores_equal_brute_force(n_kv: int | None) -> None:
    model = _model(n_kv=n_kv)
    scores, brute = composition_scores(model, baseline_samples=8), _brute_force(model)
    for kind in "qkv":
        got = getattr(scores, kind)
        assert torch.equal(got.isnan(), brute[kind].isnan())
        torch.testing.assert_close(got.nan_to_num(), brute[kind].nan_to_num(), atol=1e-5, rtol=1e-4)


def test_composition_baseline_matches_random_matrices() -> None:
    gen = torch.Generator().manual_seed(5)
    d, e = 24, 6
    vals = []
    for _ in range(200):
        a = torch.randn(d, e, generator=gen, dtype=torch.float64) @ torch.randn(e, d, generator=gen, dtype=torch.float64)
        b = torch.randn(d, e, generator=gen, dtype=torch.float64) @ torch.randn(e, d, generator=gen, dtype=torch.float64)
        vals.append(float((a @ b).norm() / (a.norm() * b.norm())))
    assert composition_baseline(d, e, n_samples=256) == pytest.approx(np.mean(vals), rel=0.05)


def test_handbuilt_previous_token_head_tops_k_composition() -> None:
    model = handbuilt_induction_model()
    scores = composition_scores(model, baseline_samples=8)
    assert top_pairs(scores.k, 1)[0][:4] == (0, 0, 1, 0)
    assert float(scores.k[0, 0, 1, 0]) > 1.5 * scores.baseline
    assert float(scores.q[0, 0, 1, 0]) == 0.0 and float(scores.k[0, 1, 1, 0]) == 0.0  # zero head: 0, not NaN


def test_copying_scores_match_full_eigenvalues() -> None:
    model = _model(n_layers=2, norm="none", d_vocab=15)
    cs = copying_scores(model)
    for layer in range(2):
        lam = torch.linalg.eigvals(ov_circuit(model, layer).AB.double())  # [h v v], full spectrum
        ratio = lam.real.sum(-1) / lam.abs().sum(-1)
        torch.testing.assert_close(cs.eig_ratio[layer], ratio.float(), atol=1e-4, rtol=1e-3)
    # the hand-built induction head's OV is the identity on tokens: a perfect copier
    assert float(copying_scores(handbuilt_induction_model()).eig_ratio[1, 0]) == pytest.approx(1.0, abs=1e-5)


def test_bigram_logits_and_correlation() -> None:
    model = _model(n_layers=1, norm="none", d_vocab=10)
    tokens = torch.arange(10)[None]
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.W_O.zero_()  # a zero-layer model: logits are the direct path
        torch.testing.assert_close(model(tokens)[0] - model.W_pos[:10] @ model.W_U, bigram_logits(model))
    counts = torch.randint(0, 1000, (10, 10)).numpy()
    logp = torch.log(torch.as_tensor(counts, dtype=torch.float64) + 0.1)
    assert bigram_correlation(logp, counts, min_count=1) == pytest.approx(1.0, abs=1e-6)
    assert abs(bigram_correlation(torch.randn(10, 10), counts, min_count=1)) < 0.5


def _train_skip_trigram_model() -> tuple[HookedTransformer, list[tuple[int, int, int]]]:
    """1-layer attention-only model trained on planted skip-trigrams: A somewhere before B makes C next."""
    v, n = 12, 8
    planted = [(1, 2, 3), (4, 5, 6), (7, 8, 9)]
    cfg = ModelConfig(d_model=32, n_layers=1, d_vocab=v, n_ctx=n, attention=AttentionConfig(n_heads=2, d_head=16),
                      mlp=None, norm=NormConfig(kind="none"), positional=PositionalConfig(kind="learned"))
    model = HookedTransformer(cfg, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    filler = torch.tensor([0, 10, 11])
    for _ in range(300):
        x = filler[torch.randint(0, 3, (64, n), generator=gen)]
        which = torch.randint(0, 3, (64,), generator=gen)
        has_a = torch.rand(64, generator=gen) < 0.5
        abc = torch.tensor(planted)[which]
        pos_a = torch.randint(0, n - 3, (64,), generator=gen)
        x[has_a, pos_a[has_a]] = abc[has_a, 0]
        x[:, -2] = abc[:, 1]
        x[:, -1] = torch.where(has_a, abc[:, 2], filler[0])
        loss = torch.nn.functional.cross_entropy(model(x[:, :-1])[:, -1], x[:, -1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), planted


def test_skip_trigram_extraction_agrees_with_running_the_model() -> None:
    model, planted = _train_skip_trigram_model()
    found = skip_trigrams(model, k=12, exclude=(0, 10, 11))
    assert {(t.a, t.b, t.c) for t in found[:6]} >= set(planted)
    effects = verify_skip_trigrams(model, found, filler=0, length=7)
    planted_effects = [float(e) for t, e in zip(found, effects) if (t.a, t.b, t.c) in planted]
    assert min(planted_effects) > 1.0
    assert float((effects > 0).float().mean()) >= 0.75
    # independent check: the weights-only OV boost predicts the measured effect's ranking
    ov = torch.tensor([t.ov for t in found])
    rank = lambda x: x.argsort().argsort().double()  # noqa: E731
    assert torch.corrcoef(torch.stack([rank(ov), rank(effects)]))[0, 1] > 0.3
    qk = qk_circuit(model, 0).AB
    assert qk.shape == (2, 12, 12)
    # per_source=1: the same ranking restricted to the best B of each (head, A), one row per (head, A)
    one = skip_trigrams(model, k=12, exclude=(0, 10, 11), per_source=1)
    assert len({(t.head, t.a) for t in one}) == len(one)
    full = skip_trigrams(model, k=2 * 12 * 12, exclude=(0, 10, 11))  # every (head, B, A)
    first: dict[tuple[int, int], SkipTrigram] = {}
    for t in full:  # brute force: the first (strongest) row of each (head, A) in the unrestricted list
        first.setdefault((t.head, t.a), t)
    want = sorted(first.values(), key=lambda t: -t.score)[:12]
    assert [(t.head, t.a, t.b, t.c) for t in one] == [(t.head, t.a, t.b, t.c) for t in want]
    assert {(t.a, t.b, t.c) for t in one} >= set(planted)


def test_qk_and_ov_circuits_equal_the_model_on_tiny_contexts() -> None:
    """Exact identities of a 1-layer attention-only model without positional embeddings."""
    model = _model(n_layers=1, norm="none", d_vocab=9, positional=PositionalConfig(kind="none"), seed=2)
    a, b = 3, 7
    # OV: a one-token context attends to itself, so logits = direct path + sum of the heads' OV rows
    expected = bigram_logits(model)[a] + ov_circuit(model, 0).AB[:, a].sum(0)
    torch.testing.assert_close(model(torch.tensor([[a]]))[0, 0], expected, atol=1e-5, rtol=1e-5)
    # QK: the attention score of query b on key a
    _, cache = model.run_with_cache(torch.tensor([[a, b]]), names=["blocks.0.attn.hook_attn_scores"])
    torch.testing.assert_close(cache["blocks.0.attn.hook_attn_scores"][0, :, 1, 0], qk_circuit(model, 0).AB[:, b, a],
                               atol=1e-5, rtol=1e-5)
