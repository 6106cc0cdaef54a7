"""Fourier analysis checked on hand-built embeddings, neurons and logits with known frequencies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mechscope.analysis.fourier import (
    embedding_freq_norms,
    fourier_basis,
    keep_freqs_2d,
    key_fraction,
    key_frequencies,
    logit_trig_fit,
    neuron_freq_fractions,
    sum_directions,
)


@pytest.mark.parametrize("p", [5, 8, 23, 113])
def test_basis_is_orthonormal_and_labelled(p: int) -> None:
    fb = fourier_basis(p)
    assert fb.basis.shape == (p, p)
    assert torch.allclose(fb.basis @ fb.basis.T, torch.eye(p, dtype=torch.float64), atol=1e-12)
    assert fb.freqs.tolist().count(0) == 1 and int(fb.freqs.max()) == p // 2
    x = torch.arange(p, dtype=torch.float64)
    i = fb.names.index("sin 2")
    assert torch.allclose(fb.basis[i], torch.sin(2 * math.pi * 2 * x / p) * math.sqrt(2 / p))


def _hand_embedding(p: int, freqs: list[int], d: int = 32, noise: float = 0.02) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.arange(p, dtype=torch.float64)
    cols = [f(2 * math.pi * k * x / p) for k in freqs for f in (torch.cos, torch.sin)]
    directions = torch.randn(len(cols), d, generator=g, dtype=torch.float64)
    return torch.stack(cols, 1) @ directions + noise * torch.randn(p, d, generator=g, dtype=torch.float64)


def test_key_frequencies_of_a_hand_built_embedding() -> None:
    p, freqs = 31, [3, 7, 11, 14]
    W = _hand_embedding(p, freqs)
    energy = embedding_freq_norms(W)
    assert energy.shape == (p // 2 + 1,)
    # independent check: Parseval (the basis is orthonormal, so energies sum to the squared norm)
    assert float(energy.sum()) == pytest.approx(float(W.pow(2).sum()), rel=1e-10)
    keys = key_frequencies(energy)
    assert keys == freqs
    assert key_fraction(energy, keys) > 0.99
    assert key_frequencies(embedding_freq_norms(_hand_embedding(p, [5]))) == [5]


def test_neuron_fractions_against_least_squares() -> None:
    p, k = 23, 4
    a = torch.arange(p, dtype=torch.float64)[:, None]
    b = torch.arange(p, dtype=torch.float64)[None, :]
    w = 2 * math.pi * k / p
    pure = 2 * torch.cos(w * (a + b)) + 0.5 * torch.sin(w * a) + torch.cos(w * a) * torch.sin(w * b) + 3.0
    relu = torch.relu(torch.cos(w * (a + b) + 0.3))
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(p, p, generator=g, dtype=torch.float64)
    fr = neuron_freq_fractions(torch.stack([pure, relu, rand], -1))
    assert fr.shape == (3, p // 2 + 1)
    assert fr[0, k] == pytest.approx(1.0, abs=1e-10) and int(fr[0].argmax()) == k
    # independent: R² of a least-squares fit on 1, cos/sin(w a), cos/sin(w b) and their four products
    ca, sa, cb, sb = (f(w * v).expand(p, p) for v in (a, b) for f in (torch.cos, torch.sin))
    X = torch.stack([torch.ones(p, p, dtype=torch.float64), ca, sa, cb, sb, ca * cb, ca * sb, sa * cb, sa * sb], -1)
    X = X.reshape(p * p, -1).numpy()
    for i, y in enumerate([relu, rand]):
        yv = y.reshape(-1).numpy()
        coef, *_ = np.linalg.lstsq(X, yv, rcond=None)
        r2 = 1 - np.sum((yv - X @ coef) ** 2) / np.sum((yv - yv.mean()) ** 2)
        assert float(fr[i + 1, k]) == pytest.approx(r2, abs=1e-9)
    assert fr[2].max() < 0.3


def test_logit_trig_fit_recovers_coefficients() -> None:
    p = 17
    r = torch.arange(p, dtype=torch.float64)
    d = r[:, None, None] + r[None, :, None] - r[None, None, :]
    logits = 2.0 * torch.cos(2 * math.pi * 3 * d / p) + 0.5 * torch.cos(2 * math.pi * 5 * d / p) + 7.0
    alpha, frac = logit_trig_fit(logits, [3, 5])
    assert alpha.tolist() == pytest.approx([2.0, 0.5]) and frac == pytest.approx(1.0)
    _, frac3 = logit_trig_fit(logits, [3])
    assert frac3 == pytest.approx(4.0 / 4.25)  # energies 2² vs 0.5²
    noise = torch.randn(p, p, p, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert logit_trig_fit(noise, [3, 5])[1] < 0.05


def test_sum_directions_and_2d_ablation() -> None:
    p, keys = 13, [2, 5]
    U = sum_directions(p, keys)
    assert torch.allclose(U.T @ U, torch.eye(4, dtype=torch.float64), atol=1e-12)
    a = torch.arange(p, dtype=torch.float64)[:, None]
    b = torch.arange(p, dtype=torch.float64)[None, :]
    kept = torch.cos(2 * math.pi * 2 * (a + b) / p) + torch.sin(2 * math.pi * 5 * a / p) + 1.0
    dropped = torch.cos(2 * math.pi * 3 * a / p) * torch.cos(2 * math.pi * 2 * b / p)
    out = keep_freqs_2d((kept + dropped)[..., None], keys)[..., 0]
    assert torch.allclose(out, kept, atol=1e-10)
    assert torch.allclose(keep_freqs_2d(out[..., None], keys)[..., 0], out, atol=1e-10)  # a projection
