"""Matryoshka SAE (Bussmann et al. 2025; Nabeshima 2024): nested prefixes of latents each reconstruct.

Latents are ordered; for every prefix size ``m`` in ``prefixes`` (the last is ``d_sae``) the first ``m``
latents alone must reconstruct the input::

    loss = mean_m || x - (acts[:, :m] @ W_dec[:m] + b_dec) ||^2  + aux-k

so early latents are pushed to carry general features (they cannot rely on later, more specific latents
to explain part of their tokens), which is what reduces *feature absorption* — a general latent ("starts
with L") that stops firing where a specific one ("lion") took over its direction. Activation is TopK
(per token, as ``topk``); inference is exactly a TopK SAE, so splicing, evaluation, saving and the one
trainer need nothing new: the variant differs only in its training loss. (SAELens has no Matryoshka layout,
so ``save_saelens`` refuses it like crosscoders.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mechscope.dictionaries import sparse_ops as so
from mechscope.dictionaries.base import TrainContext, TrainOutput
from mechscope.dictionaries.registry import register
from mechscope.dictionaries.topk import TopKConfig, TopKDictionary
from mechscope.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class MatryoshkaConfig(TopKConfig):
    """A Matryoshka TopK SAE; ``prefixes`` are the nested dictionary sizes trained to reconstruct."""

    architecture = "matryoshka"

    prefixes: tuple[int, ...] = ()
    """Strictly increasing prefix sizes ending at ``d_sae``; empty: ``d_sae`` / 16, / 8, / 4, / 2, / 1."""

    def __post_init__(self) -> None:
        super().__post_init__()
        prefixes = tuple(int(p) for p in self.prefixes) or tuple(
            sorted({max(1, self.d_sae // f) for f in (16, 8, 4, 2, 1)}))
        object.__setattr__(self, "prefixes", prefixes)
        if any(b <= a for a, b in zip(prefixes, prefixes[1:])) or prefixes[0] < 1 or prefixes[-1] != self.d_sae:
            raise ConfigError(f"prefixes must be strictly increasing positive sizes ending at d_sae={self.d_sae}, "
                              f"got {prefixes}")


@register
class MatryoshkaDictionary(TopKDictionary):
    """TopK SAE trained with the nested-prefix loss; see the module docstring."""

    config_class = MatryoshkaConfig
    cfg: MatryoshkaConfig

    def prefix_mses(self, x: Tensor, target: Tensor) -> Tensor:
        """``[n_prefixes]`` squared error of each prefix's reconstruction (normalised units; no grad needed)."""
        ctx = TrainContext(1.0, None, 0, True)
        return self._losses(self.center(x), self.scale_target(target), ctx)[0]

    def _losses(self, x_c: Tensor, target: Tensor, ctx: TrainContext) -> tuple[Tensor, Tensor, so.SparseCode,
                                                                                Tensor, Tensor]:
        with torch.no_grad():
            pre = self.pre_acts(x_c)
        code, pre_vals = self._select(pre, ctx)
        vals = self._chosen_acts(x_c, code, pre_vals)
        bounds = torch.tensor((0, *self.cfg.prefixes), device=code.cols.device)
        group = torch.bucketize(code.cols, bounds[1:], right=True)  # group g: latents [bounds[g], bounds[g+1])
        recons = self.b_dec.expand(x_c.shape[0], -1)
        mses = []
        for g in range(len(self.cfg.prefixes)):  # a few nested groups; each adds its latents' decode
            recons = recons + so.sparse_decode(code, vals * (group == g), self.W_dec)
            mses.append((recons - target).pow(2).sum() / x_c.shape[0])
        return torch.stack(mses), recons, code, vals, pre

    def training_losses(self, x: Tensor, target: Tensor, ctx: TrainContext) -> TrainOutput:
        """Mean of the prefix losses + aux-k; ``mse`` reported is the full dictionary's."""
        x_c = self.center(x)
        target = self.scale_target(target)
        mses, recons, code, vals, pre = self._losses(x_c, target, ctx)
        aux = self._aux_k_loss(x_c, target, recons, pre, ctx)
        with torch.no_grad():
            fired = so.fired_counts(code, vals, self.cfg.d_sae)
            l0 = fired.sum() / x.shape[0]
        return TrainOutput(mses.mean() + aux, mses[-1], torch.zeros_like(aux), aux, recons.detach(), fired, l0)


__all__ = ["MatryoshkaConfig", "MatryoshkaDictionary"]
