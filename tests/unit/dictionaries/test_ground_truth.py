"""Every variant recovers known features from synthetic superposition (mean max cosine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from mechscope.dictionaries.metrics import mean_max_cosine
from mechscope.dictionaries.registry import create, dictionary_class
from mechscope.dictionaries.synthetic import SyntheticActivations, SyntheticConfig
from mechscope.dictionaries.train import Trainer, TrainerConfig

GEN = SyntheticConfig(d_in=16, n_features=32, mean_active=3, power_law_exponent=0.3, seed=0)
CASES = {  # arch: (config kwargs, steps, required mean max cosine)
    "topk": ({"k": 3}, 300, 0.95),
    "batchtopk": ({"k": 3}, 300, 0.9),
    "relu": ({"l1_coefficient": 0.3}, 400, 0.9),
    "jumprelu": ({"l0_coefficient": 0.1}, 400, 0.9),
    "gated": ({"l1_coefficient": 1.0}, 400, 0.9),
}


def _train(arch: str, kwargs: dict, steps: int, data: Iterator, lr: float = 3e-3) -> torch.nn.Module:
    d = create(dictionary_class(arch).config_class(d_in=16, d_sae=64, **kwargs))
    cfg = TrainerConfig(total_steps=steps, lr=lr, progress=False, dead_window_tokens=20_000,
                        sparsity_warmup_steps=50)
    return Trainer(d, cfg).fit(data)


@pytest.mark.parametrize("arch", list(CASES))
def test_sae_recovers_features(arch: str) -> None:
    kwargs, steps, bar = CASES[arch]
    gen = SyntheticActivations(GEN)
    d = _train(arch, kwargs, steps, gen.batches(256))
    assert mean_max_cosine(d.W_dec.detach(), gen.features) >= bar


def test_correlated_features_recovered_by_topk() -> None:
    gen = SyntheticActivations(SyntheticConfig(d_in=16, n_features=32, mean_active=3, correlation=0.5, seed=1))
    d = _train("topk", {"k": 3}, 300, gen.batches(256), lr=1e-2)
    assert mean_max_cosine(d.W_dec.detach(), gen.features) >= 0.9


def test_transcoder_recovers_output_features() -> None:
    gen = SyntheticActivations(GEN)
    g = torch.Generator().manual_seed(5)
    f_out = torch.nn.functional.normalize(torch.randn(32, 10, generator=g), dim=-1)

    def pairs() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            b = gen.sample(256)
            yield b.acts, b.codes @ f_out

    d = _train("transcoder", {"d_out": 10, "l1_coefficient": 0.3}, 400, pairs())
    assert mean_max_cosine(d.W_dec.detach(), f_out) >= 0.9


def test_crosscoder_recovers_features_in_every_layer() -> None:
    gen = SyntheticActivations(GEN)
    g = torch.Generator().manual_seed(6)
    per_layer = torch.nn.functional.normalize(torch.randn(3, 32, 16, generator=g), dim=-1)

    def stacks() -> Iterator[torch.Tensor]:
        while True:
            codes = gen.sample(256).codes
            yield torch.einsum("bf,lfd->bld", codes, per_layer)

    d = _train("crosscoder", {"n_layers": 3, "l1_coefficient": 0.3}, 400, stacks())
    for layer in range(3):
        assert mean_max_cosine(d.W_dec[:, layer].detach(), per_layer[layer]) >= 0.9
