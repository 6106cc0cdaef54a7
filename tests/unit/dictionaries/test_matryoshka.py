"""Matryoshka SAE: the loss is the mean of nested-prefix losses (checked against a dense autograd reference),
it saves/loads through the registry, and its early latents reconstruct far better than a TopK's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechscope.dictionaries import io
from mechscope.dictionaries.base import TrainContext
from mechscope.dictionaries.matryoshka import MatryoshkaConfig, MatryoshkaDictionary
from mechscope.dictionaries.synthetic import SyntheticActivations, SyntheticConfig
from mechscope.dictionaries.topk import TopKConfig, TopKDictionary, topk_relu
from mechscope.dictionaries.train import Trainer, TrainerConfig
from mechscope.errors import ConfigError


def test_config_defaults_and_errors() -> None:
    assert MatryoshkaConfig(d_in=4, d_sae=64, k=2).prefixes == (4, 8, 16, 32, 64)
    assert MatryoshkaConfig(d_in=4, d_sae=3, k=1).prefixes == (1, 3)
    with pytest.raises(ConfigError, match="ending at d_sae=8"):
        MatryoshkaConfig(d_in=4, d_sae=8, k=2, prefixes=(2, 4))
    with pytest.raises(ConfigError, match="strictly increasing"):
        MatryoshkaConfig(d_in=4, d_sae=8, k=2, prefixes=(4, 4, 8))


def test_loss_and_gradients_match_dense_reference() -> None:
    d = MatryoshkaDictionary(MatryoshkaConfig(d_in=6, d_sae=12, k=3, prefixes=(2, 5, 12), seed=1))
    with torch.no_grad():
        d.b_dec.add_(0.3)
        d.b_enc.add_(0.05)
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(0))
    out = d.training_losses(x, x, TrainContext(1.0, None, 0))
    out.loss.backward()
    got = {n: p.grad.clone() for n, p in d.named_parameters()}
    d.zero_grad()
    acts = topk_relu(d.pre_acts(d.center(x)), 3)
    losses = [((acts[:, :m] @ d.W_dec[:m] + d.b_dec - x) ** 2).sum() / 10 for m in (2, 5, 12)]
    ref = torch.stack(losses).mean()
    ref.backward()
    torch.testing.assert_close(out.loss, ref)
    torch.testing.assert_close(out.mse, losses[-1])
    for n, p in d.named_parameters():
        torch.testing.assert_close(got[n], p.grad, msg=n)
    torch.testing.assert_close(d.prefix_mses(x, x), torch.stack(losses).detach())


def test_prefixes_reconstruct_better_than_topk(tmp_path: Path) -> None:
    data = SyntheticActivations(SyntheticConfig(d_in=16, n_features=48, power_law_exponent=1.0, seed=0))
    batches = [data.sample(256).acts for _ in range(150)]
    held = data.sample(1024).acts
    common = dict(d_in=16, d_sae=48, k=4, normalize_activations="expected_norm")
    mat = MatryoshkaDictionary(MatryoshkaConfig(prefixes=(6, 12, 24, 48), **common))
    top = TopKDictionary(TopKConfig(**common))
    for d in (mat, top):
        Trainer(d, TrainerConfig(total_steps=150, lr=1e-2, progress=False)).fit(iter(batches))
    io.save(mat, tmp_path / "m")
    back = io.load(tmp_path / "m")
    assert isinstance(back, MatryoshkaDictionary) and back.cfg.prefixes == (6, 12, 24, 48)

    def prefix_fvu(d: TopKDictionary, m: int) -> float:
        with torch.no_grad():
            x_c = d.center(held)
            acts = topk_relu(d.pre_acts(x_c), 4)[:, :m]
            t = d.scale_target(held)
            err = ((acts @ d.W_dec[:m] + d.b_dec - t) ** 2).sum()
            return float(err / ((t - t.mean(0)) ** 2).sum())

    for m in (6, 12, 24):  # early latents carry the general structure (measured 0.53 vs 0.71 at m=6)
        assert prefix_fvu(mat, m) < 0.85 * prefix_fvu(top, m), m
    assert prefix_fvu(mat, 48) < 0.25  # and the whole dictionary still reconstructs (0.16; TopK 0.15)
