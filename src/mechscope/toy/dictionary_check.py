"""Dictionary check: does a sparse autoencoder recover a toy model's true feature directions?

A toy model of superposition (:mod:`mechscope.toy.superposition`) stores ``n_features`` sparse features
in ``d_hidden`` dimensions along known directions ``W_i``. Its hidden activations ``h = x W`` are then a
ground-truth test set for dictionary learning: train a TopK and a ReLU SAE from
:mod:`mechscope.dictionaries` on ``h`` and score each with the mean over represented features of the
best cosine between ``W_i`` and any decoder row (``mean_max_cosine``; 1 is perfect recovery). Random
unit directions give the chance level reported next to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import ConfigError
from mechscope.toy import geometry as geo
from mechscope.toy.superposition import ToyModel, ToyModelConfig, ToyTrainConfig, train_toy_model

_STREAM_SAE = 7  # hidden activations for the SAE come from their own random stream


@dataclass(frozen=True, kw_only=True)
class DictionaryCheckConfig:
    """Toy model and SAE sizes."""

    n_features: int = 40
    """Features of the toy model (uniform importance)."""
    d_hidden: int = 10
    """Hidden width of the toy model (the SAE's ``d_in``)."""
    feature_probability: float = 0.05
    """Probability ``1 − S`` that each feature is present."""
    toy_train: ToyTrainConfig = field(default_factory=lambda: ToyTrainConfig(steps=3000, lr=3e-3, batch_size=512,
                                                                             progress=False))
    """Training of the toy model."""
    sae_steps: int = 3000
    """SAE optimiser steps."""
    sae_batch_size: int = 1024
    """Hidden activations per SAE step."""
    k: int = 3
    """Active latents of the TopK SAE."""
    l1_coefficient: float = 0.3
    """L1 weight of the ReLU SAE."""
    seed: int = 0
    """Seed of the toy model and the SAEs."""

    def __post_init__(self) -> None:
        if not 0 < self.d_hidden < self.n_features:
            raise ConfigError(f"need 0 < d_hidden < n_features, got {self.d_hidden}, {self.n_features}")
        if not 0 < self.feature_probability <= 1:
            raise ConfigError(f"feature_probability must be in (0, 1], got {self.feature_probability}")
        if self.sae_steps < 1 or self.sae_batch_size < 1 or not 0 < self.k <= self.n_features:
            raise ConfigError(f"sae_steps, sae_batch_size must be >= 1 and k in [1, n_features], got "
                              f"{self.sae_steps}, {self.sae_batch_size}, {self.k}")


def _hidden_batches(model: ToyModel, batch_size: int, n: int) -> Iterator[Tensor]:
    """``n`` batches ``[batch, d_hidden]`` of the (single-instance) toy model's hidden activations."""
    for step in range(n):  # detach, not no_grad: a no_grad block would stay active across the yield
        yield model.hidden(model.generate_batch(batch_size, step, stream=_STREAM_SAE))[0].detach()


def run_dictionary_check(cfg: DictionaryCheckConfig) -> dict[str, Any]:
    """Train the toy model, then a TopK and a ReLU SAE on its hidden activations; score recovery."""
    from mechscope.dictionaries.metrics import mean_max_cosine
    from mechscope.dictionaries.relu import ReLUConfig, ReLUDictionary
    from mechscope.dictionaries.topk import TopKConfig, TopKDictionary
    from mechscope.dictionaries.train import Trainer, TrainerConfig

    toy = ToyModel(ToyModelConfig(n_features=cfg.n_features, d_hidden=cfg.d_hidden, seed=cfg.seed),
                   feature_probability=cfg.feature_probability)
    train_toy_model(toy, cfg.toy_train)
    W = toy.W.detach()[0]
    true = W[W.norm(dim=-1) > 0.5]
    tcfg = TrainerConfig(total_steps=cfg.sae_steps, lr=3e-3, progress=False, seed=cfg.seed)
    saes = {"topk": TopKDictionary(TopKConfig(d_in=cfg.d_hidden, d_sae=cfg.n_features, k=cfg.k, seed=cfg.seed)),
            "relu": ReLUDictionary(ReLUConfig(d_in=cfg.d_hidden, d_sae=cfg.n_features,
                                              l1_coefficient=cfg.l1_coefficient, seed=cfg.seed))}
    out: dict[str, Any] = {"n_features": cfg.n_features, "d_hidden": cfg.d_hidden,
                           "feature_probability": cfg.feature_probability, "represented": int(true.shape[0]),
                           "toy_dims_per_feature": round(float(geo.dimensions_per_feature(toy.W.detach())), 4)}
    test = next(_hidden_batches(toy, 8192, 1))  # step 0 of the SAE stream; training never reuses it
    for name, sae in saes.items():
        Trainer(sae, tcfg).fit(_hidden_batches(toy, cfg.sae_batch_size, cfg.sae_steps + 1))
        with torch.no_grad():
            res = sae(test)
        fvu = float((res.recons - test).square().sum() / (test - test.mean(0)).square().sum())
        out[name] = {"mean_max_cosine": round(mean_max_cosine(sae.W_dec.detach(), true), 4),
                     "fvu": round(fvu, 4)}
    rand = torch.randn(cfg.n_features, cfg.d_hidden, generator=torch.Generator().manual_seed(cfg.seed))
    out["random_directions_mean_max_cosine"] = round(mean_max_cosine(rand, true), 4)
    return out
