"""The absorption metric finds planted absorption: a specific latent that fires instead of the letter latent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechscope.dictionaries.absorption import absorption, first_letters
from mechscope.dictionaries.topk import TopKConfig, TopKDictionary


def test_first_letters() -> None:
    vocab = {0: " lion", 1: "ion", 2: " L", 3: " émile", 4: " Apple", 5: " 42x"}
    got = first_letters([0, 1, 2, 3, 4, 5, 0], lambda ids: vocab[ids[0]])
    assert got.tolist() == ["l", "", "", "", "a", "", "l"]


def _planted() -> tuple[TopKDictionary, torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(16, 16, generator=g))[0].T  # orthonormal rows
    u_a, u_b, s_apple = basis[0], basis[1], basis[2]
    dec = torch.cat([torch.stack([u_a, u_b, (u_a + s_apple) / 2**0.5]), basis[3:8]])  # 8 latents
    d = TopKDictionary(TopKConfig(d_in=16, d_sae=8, k=1, b_dec_init="zeros"))
    with torch.no_grad():
        d.W_dec.copy_(dec)
        d.W_enc.copy_(dec.T)
        d.b_enc.zero_()
        d.b_dec.zero_()
    noise = 0.05 * torch.randn(260, 16, generator=g)
    rows = torch.cat([u_a.expand(100, -1), (u_a + s_apple).expand(60, -1), u_b.expand(100, -1)]) + noise
    letters = np.array(["a"] * 160 + ["b"] * 100)
    return d, rows, letters


def test_planted_absorption_is_found() -> None:
    d, rows, letters = _planted()
    rep = absorption(d, rows, letters, cos_threshold=0.3)
    assert rep["probe_accuracy"] == 1.0 and rep["letters"] == 2
    a, b = rep["per_letter"]["a"], rep["per_letter"]["b"]
    assert a["main_latent"] == 0 and b["main_latent"] == 1
    assert a["absorption_rate"] == pytest.approx(60 / 160, abs=0.08) and a["absorption_rate"] == a["false_negative_rate"]
    assert b["absorption_rate"] == 0 and b["false_negative_rate"] == 0
    # with the absorbing latent's letter component removed, the misses are no longer absorption
    with torch.no_grad():
        d.W_dec[2] = torch.nn.functional.normalize(d.W_dec[2] - (d.W_dec[2] @ d.W_dec[0]) * d.W_dec[0], dim=0)
    rep = absorption(d, rows, letters, cos_threshold=0.3)
    assert rep["per_letter"]["a"]["false_negative_rate"] > 0.3 and rep["per_letter"]["a"]["absorption_rate"] == 0
