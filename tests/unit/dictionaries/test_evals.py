"""evals: a perfect dictionary recovers 100% of the CE loss; every figure equals an independent
computation from cached activations and hand-written cross-entropy / KL."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mechscope.dictionaries.evals import EvalConfig, density_histogram, evaluate, evaluate_many
from mechscope.dictionaries.relu import ReLUConfig, ReLUDictionary
from mechscope.dictionaries.topk import TopKConfig, TopKDictionary
from mechscope.errors import ConfigError, ShapeError
from mechscope.models.transformer import HookedTransformer
from tests.conftest import tiny_cfg

H = "blocks.0.hook_resid_post"


def perfect_relu(d: int, hook: str | None) -> ReLUDictionary:
    """A genuine ReLU SAE that reconstructs any input exactly: relu(x) - relu(-x) = x (d_sae = 2 d)."""
    sae = ReLUDictionary(ReLUConfig(d_in=d, d_sae=2 * d, hook_name=hook))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    m = HookedTransformer(tiny_cfg("llama", n_layers=3), seed=1).eval()
    with torch.no_grad():
        m.unembed.W_U.mul_(4.0)  # confident predictions, so the activation matters for the loss
    return m


@pytest.fixture(scope="module")
def tokens(model: HookedTransformer) -> torch.Tensor:
    """Text the model itself finds likely (sampled at temperature 0.5): clean CE well below ln(50)."""
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 50, (5, 1), generator=g)
    with torch.no_grad():
        for _ in range(11):
            probs = (model(t)[:, -1] / 0.5).softmax(-1)
            t = torch.cat([t, torch.multinomial(probs, 1, generator=g)], dim=1)
    return t


def test_perfect_dictionary_recovers_all_loss(model: HookedTransformer, tokens: torch.Tensor) -> None:
    res = evaluate(model, perfect_relu(32, H), tokens, cfg=EvalConfig(batch_size=2))
    assert res.ce_loss_zero > res.ce_loss_clean + 0.01  # zero-ablation genuinely hurts
    assert res.ce_loss_recovered == pytest.approx(1.0, abs=1e-5)
    assert res.fvu == pytest.approx(0.0, abs=1e-10) and res.mse == pytest.approx(0.0, abs=1e-10)
    assert res.kl == pytest.approx(0.0, abs=1e-6)
    assert res.l0 > 0 and res.n_tokens == 5 * 11


def test_figures_match_independent_computation(model: HookedTransformer, tokens: torch.Tensor) -> None:
    sae = TopKDictionary(TopKConfig(d_in=32, d_sae=48, k=3, hook_name=H, seed=4))
    perfect = perfect_relu(32, H)
    res, res_perfect = evaluate_many(model, [sae, perfect], tokens, cfg=EvalConfig(batch_size=3))
    # independent: cache the activation, run the dictionary, patch the reconstruction in by hand
    torch.set_grad_enabled(False)
    clean_logits, cache = model.run_with_cache(tokens, names=[H])
    x = cache[H]
    out = sae(x)
    keep = torch.ones(tokens.shape, dtype=torch.bool)
    keep[:, 0] = False

    def patched(value: torch.Tensor) -> torch.Tensor:
        with model.hooks(fwd=[(H, lambda a, hook: torch.where(keep[..., None], value, a))]):
            return model(tokens)

    def ce(logits: torch.Tensor) -> float:
        return float(F.cross_entropy(logits[:, 1:-1].reshape(-1, 50), tokens[:, 2:].reshape(-1)))

    spliced = patched(out.recons)
    clean, zero, spl = ce(clean_logits), ce(patched(torch.zeros_like(x))), ce(spliced)
    assert res.ce_loss_clean == pytest.approx(clean, rel=1e-5)
    assert res.ce_loss_zero == pytest.approx(zero, rel=1e-5)
    assert res.ce_loss_spliced == pytest.approx(spl, rel=1e-5)
    assert res.ce_loss_recovered == pytest.approx((zero - spl) / (zero - clean), rel=1e-4)
    assert res.ce_loss_recovered < 0.99  # a random dictionary does not recover everything
    p, q = clean_logits[:, 1:-1].log_softmax(-1), spliced[:, 1:-1].log_softmax(-1)
    assert res.kl == pytest.approx(float((p.exp() * (p - q)).sum(-1).mean()), rel=1e-4)
    xk, rk, ak = x[keep].double(), out.recons[keep].double(), out.acts[keep]
    assert res.mse == pytest.approx(float((xk - rk).pow(2).sum(-1).mean()), rel=1e-6)
    assert res.fvu == pytest.approx(float((xk - rk).pow(2).sum() / (xk - xk.mean(0)).pow(2).sum()), rel=1e-6)
    assert res.l0 == pytest.approx(3.0)
    density = (ak != 0).double().mean(0)
    torch.testing.assert_close(res.density, density.float())
    assert res.dead_fraction == pytest.approx(float((density == 0).double().mean()))
    assert res.dense_fraction == pytest.approx(float((density > 0.1).double().mean()))
    assert res_perfect.ce_loss_clean == res.ce_loss_clean  # the shared clean pass
    torch.set_grad_enabled(True)


def test_histogram_and_json(model: HookedTransformer, tokens: torch.Tensor) -> None:
    res = evaluate(model, perfect_relu(32, H), tokens)
    counts, edges = density_histogram(res.density, bins=10)
    assert int(counts.sum()) == int((res.density > 0).sum()) and edges.shape == (11,)
    d = res.to_dict()
    assert set(d) >= {"l0", "mse", "fvu", "ce_loss_recovered", "kl", "dead_fraction", "dense_fraction"}
    assert all(math.isfinite(d[k]) for k in ("l0", "fvu", "kl"))


def test_excluded_ids_and_errors(model: HookedTransformer, tokens: torch.Tensor) -> None:
    t = tokens.clone()
    t[:, -3:] = 0  # "padding"
    res = evaluate(model, perfect_relu(32, H), t, cfg=EvalConfig(exclude_token_ids=(0,)))
    assert res.n_tokens == int((t[:, 1:] != 0).sum())
    with pytest.raises(ShapeError, match="n_seq pos"):
        evaluate(model, perfect_relu(32, H), tokens[0])
    with pytest.raises(ConfigError, match="hook_name"):
        evaluate(model, perfect_relu(32, None), tokens)
    with pytest.raises(ShapeError, match="d_in=16"):
        evaluate(model, perfect_relu(16, H), tokens)
