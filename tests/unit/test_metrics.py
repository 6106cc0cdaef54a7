"""Metrics against direct formulas."""

from __future__ import annotations

import math

import pytest
import torch

from mechscope.errors import ShapeError
from mechscope.metrics import CrossEntropy, KLToClean, LogitDiff, LogProb, Prob, kl_div, logit_diff, normalise
from tests.typecheck import ill_typed


def test_formulas_and_broadcast_over_variants():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 10, generator=gen)  # [variants B V]
    a, w = torch.tensor([1, 2, 3]), torch.tensor([0, 0, 9])
    ld = LogitDiff(a, w)(logits)
    assert ld.shape == (4, 3)
    assert ld[2, 1] == logits[2, 1, 2] - logits[2, 1, 0]
    lp = LogProb(a)(logits)
    assert lp[1, 2].item() == pytest.approx(logits[1, 2, 3].item() - math.log(logits[1, 2].exp().sum().item()), abs=1e-5)
    assert torch.allclose(Prob(a)(logits), lp.exp()) and torch.allclose(CrossEntropy(a)(logits), -lp)
    # logit diff ignores the softmax normaliser: a constant shift of all logits changes nothing
    assert torch.allclose(logit_diff(logits + 5.0, a, w), ld)


def test_kl_and_normalise():
    gen = torch.Generator().manual_seed(1)
    clean = torch.randn(3, 10, generator=gen)
    other = torch.randn(2, 3, 10, generator=gen)
    assert torch.allclose(KLToClean(clean)(clean), torch.zeros(3), atol=1e-6)
    p, q = clean.softmax(-1), other[0].softmax(-1)
    assert torch.allclose(kl_div(other, clean)[0], (p * (p / q).log()).sum(-1), atol=1e-5)
    assert (kl_div(other, clean) >= 0).all()
    assert float(normalise(2.0, 3.0, 1.0)) == 0.5 and float(normalise(1.0, 3.0, 1.0)) == 0.0
    with pytest.raises(ValueError, match="equal"):
        normalise(1.0, 2.0, 2.0)


def test_shape_errors():
    with pytest.raises(ShapeError, match="answer ids"), ill_typed():
        logit_diff(torch.zeros(3, 10), torch.tensor([1, 2]), torch.tensor([0, 0]))
    with pytest.raises(ShapeError), ill_typed():
        kl_div(torch.zeros(3, 10), torch.zeros(2, 10))
