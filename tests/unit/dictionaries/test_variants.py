"""Each variant's forward equals its hand-written formula on small tensors."""

from __future__ import annotations

import pytest
import torch

from mechscope.dictionaries.registry import architectures
from mechscope.errors import ConfigError, ShapeError

from .conftest import D_IN, D_SAE, build

torch.manual_seed(0)
X = torch.randn(5, D_IN)


def test_registry_lists_all_variants() -> None:
    assert architectures() == ["batchtopk", "clt", "crosscoder", "gated", "jumprelu", "matryoshka", "relu", "topk",
                               "transcoder"]


def test_relu_formula() -> None:
    d = build("relu")
    pre = (X - d.b_dec) @ d.W_enc + d.b_enc
    out = d(X)
    torch.testing.assert_close(out.acts, pre.clamp(min=0))
    torch.testing.assert_close(out.recons, pre.clamp(min=0) @ d.W_dec + d.b_dec)
    assert out.acts.shape == (5, D_SAE) and out.recons.shape == X.shape


def test_topk_formula_by_sorting() -> None:
    d = build("topk")
    pre = ((X - d.b_dec) @ d.W_enc + d.b_enc).detach()
    kth = pre.sort(dim=-1, descending=True).values[:, 2:3]  # 3rd largest per row
    want = torch.where(pre >= kth, pre.clamp(min=0), torch.zeros(()))
    torch.testing.assert_close(d.encode(X), want)
    assert ((d.encode(X) != 0).sum(-1) <= 3).all()


def test_batchtopk_inference_is_threshold() -> None:
    d = build("batchtopk")
    d.threshold.fill_(0.2)
    pre = (X - d.b_dec) @ d.W_enc + d.b_enc
    torch.testing.assert_close(d.encode(X), pre * (pre > 0.2))


def test_jumprelu_formula() -> None:
    d = build("jumprelu")
    pre = (X - d.b_dec) @ d.W_enc + d.b_enc
    with torch.no_grad():
        d.threshold[0] = -0.5  # a negative threshold still keeps negative pre-activations out
    torch.testing.assert_close(d.encode(X), pre * (pre > d.threshold.clamp(min=0)).float())


def test_gated_formula() -> None:
    d = build("gated")
    xc = X - d.b_dec
    gate = xc @ d.W_enc + d.b_gate
    mag = xc @ (d.W_enc * d.r_mag.exp()) + d.b_mag
    out = d(X)
    torch.testing.assert_close(out.acts, (gate > 0).float() * mag.clamp(min=0))
    torch.testing.assert_close(out.acts_pre, mag)


def test_transcoder_formula_with_skip() -> None:
    d = build("transcoder")
    pre = X @ d.W_enc + d.b_enc
    out = d(X)
    torch.testing.assert_close(out.recons, pre.clamp(min=0) @ d.W_dec + d.b_dec + X @ d.W_skip)
    assert out.recons.shape == (5, 4)


def test_crosscoder_formula_sums_layers() -> None:
    d = build("crosscoder")
    x = torch.randn(5, 3, D_IN)
    pre = torch.einsum("bld,lds->bs", x - d.b_dec, d.W_enc) + d.b_enc
    acts = pre.clamp(min=0)
    out = d(x)
    torch.testing.assert_close(out.acts, acts)
    torch.testing.assert_close(out.recons, torch.einsum("bs,sld->bld", acts, d.W_dec) + d.b_dec)
    assert d.decoder_norms().shape == (D_SAE,)
    torch.testing.assert_close(d.decoder_norms(), sum(d.W_dec[:, i].norm(dim=-1) for i in range(3)))


def test_input_scale_round_trips_units() -> None:
    d = build("relu")
    d.with_config(input_scale=2.0, output_scale=2.0)
    pre = (2 * X - d.b_dec) @ d.W_enc + d.b_enc
    torch.testing.assert_close(d(X).recons, (pre.clamp(min=0) @ d.W_dec + d.b_dec) / 2)


def test_leading_dims_kept_and_wrong_width_rejected() -> None:
    d = build("topk")
    assert d(torch.randn(2, 3, D_IN)).acts.shape == (2, 3, D_SAE)
    with pytest.raises(ShapeError, match="expected shape"):
        d(torch.randn(4, D_IN + 1))


def test_sparsity_losses_match_formulas() -> None:
    from mechscope.dictionaries.base import TrainContext

    ctx = TrainContext(0.5, None, 0)
    d = build("relu")
    out = d.training_losses(X, X, ctx)
    acts = ((X - d.b_dec) @ d.W_enc + d.b_enc).clamp(min=0)
    want = 0.5 * 0.5 * (acts * d.W_dec.norm(dim=-1)).sum(-1).mean()
    torch.testing.assert_close(out.sparsity, want)
    torch.testing.assert_close(out.mse, ((acts @ d.W_dec + d.b_dec - X) ** 2).sum(-1).mean())
    j = build("jumprelu")
    pre = (X - j.b_dec) @ j.W_enc + j.b_enc
    torch.testing.assert_close(j.training_losses(X, X, ctx).sparsity, 0.1 * 0.5 * (pre > j.threshold).float().sum(-1).mean())


@pytest.mark.parametrize("bad", [{"d_in": 0}, {"d_sae": -1}, {"input_scale": float("nan")}])
def test_config_validation(bad: dict) -> None:
    from mechscope.dictionaries.relu import ReLUConfig

    with pytest.raises(ConfigError):
        ReLUConfig(**{"d_in": 4, "d_sae": 8, **bad})
