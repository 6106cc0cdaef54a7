"""CCS recovers a planted truth direction from unlabelled contrast pairs; baselines behave as they should."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import ShapeError
from mechscope.probes.ccs import (
    CCSConfig,
    fit_ccs,
    normalize_pairs,
    random_direction_accuracy,
    supervised_accuracy,
)
from tests.typecheck import ill_typed


def pairs(n=400, d=24, seed=123):
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(d, generator=g)
    truth /= truth.norm()
    says_true = torch.randn(d, generator=g) * 3  # what the completion says, not whether it is right
    y = torch.randint(0, 2, (n,), generator=g)
    t = (2 * y - 1).float()[:, None]
    base = torch.randn(n, d, generator=g) * 0.7  # nuisance: the statement's content, shared by both sides
    pos = base + says_true + 1.5 * t * truth + 0.8 * torch.randn(n, d, generator=g)
    neg = base - says_true - 1.5 * t * truth + 0.8 * torch.randn(n, d, generator=g)
    return pos, neg, y, truth


def test_ccs_recovers_planted_truth_direction():
    pos, neg, y, truth = pairs()
    probe = fit_ccs(pos[:300], neg[:300], CCSConfig(restarts=4, epochs=300))
    assert probe.accuracy(pos[300:], neg[300:], y[300:]) > 0.95
    w = probe.weight / probe.stats[1]  # back to raw units of the positive side
    assert abs(float(w @ truth / w.norm())) > 0.8
    assert random_direction_accuracy(pos[300:], neg[300:], y[300:]) < 0.8
    assert supervised_accuracy(pos[:300], neg[:300], y[:300], pos[300:], neg[300:], y[300:]) > 0.95


def test_normalisation_removes_the_completion_direction():
    pos, neg, _, _ = pairs()
    zp, zn, _ = normalize_pairs(pos, neg)
    assert zp.mean(0).abs().max() < 1e-5 and zn.mean(0).abs().max() < 1e-5
    with pytest.raises(ShapeError), ill_typed():
        normalize_pairs(pos, neg[:10])
