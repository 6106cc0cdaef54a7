"""Geometry measures against hand-built feature arrangements and brute-force formulas."""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from mechscope.toy import geometry as geo


def _polygon(k: int) -> torch.Tensor:
    ang = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    return torch.stack([ang.cos(), ang.sin()], -1)


def test_dimensionality_of_polytopes() -> None:
    pent = _polygon(5)[None].float()
    assert torch.allclose(geo.feature_dimensionality(pent), torch.full((1, 5), 0.4), atol=1e-5)
    tri = _polygon(3)[None].float()
    assert torch.allclose(geo.feature_dimensionality(tri), torch.full((1, 3), 2 / 3), atol=1e-5)
    anti = torch.tensor([[[1.0], [-1.0]]])
    assert torch.allclose(geo.feature_dimensionality(anti), torch.full((1, 2), 0.5))
    assert torch.allclose(geo.dimensions_per_feature(pent), torch.tensor([0.4]))


def test_superposition_matches_brute_force() -> None:
    W = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(0))
    want = torch.zeros(3, 6)
    for i in range(3):
        for a in range(6):
            unit = W[i, a] / W[i, a].norm()
            want[i, a] = sum(float(unit @ W[i, b]) ** 2 for b in range(6) if b != a)
    assert torch.allclose(geo.superposition(W), want, atol=1e-5)


def test_phase_classification() -> None:
    W = torch.tensor([[[1.0], [0.01]], [[0.02], [0.98]], [[1.0], [-1.0]], [[1.0], [1.0]]])
    got = geo.phase_n2m1(W).tolist()
    assert got[:3] == [geo.PHASE_NOT_REPRESENTED, geo.PHASE_DEDICATED, geo.PHASE_SUPERPOSITION]
    assert got[3] != geo.PHASE_SUPERPOSITION  # same sign is not an antipodal pair


def test_find_plateaus_and_groups() -> None:
    vals = torch.tensor([1.0, 0.99, 0.8, 0.51, 0.5, 0.49, 0.45, 0.4, 0.401, 0.3])
    found = geo.find_plateaus(vals)
    assert [(p.fraction, p.start, p.length) for p in found] == [
        (Fraction(1), 0, 2), (Fraction(1, 2), 3, 3), (Fraction(2, 5), 7, 2)]
    # a pentagon in dims (0, 1) plus an antipodal pair on dim 2 plus one dropped feature
    W = torch.zeros(8, 3)
    W[:5, :2] = _polygon(5).float()
    W[5, 2], W[6, 2] = 1.0, -1.0
    assert sorted(geo.feature_groups(W), key=len) == [[5, 6], [0, 1, 2, 3, 4]]
