"""BatchTopK dictionary (Bussmann et al. 2024): keep the ``batch * k`` largest activations of the batch.

Per-token sparsity may vary while the batch average stays ``k``. Inference cannot see a batch, so the
dictionary estimates a single threshold during training, an exponential moving average of the smallest
activation kept in each batch, and at inference behaves as a JumpReLU with that threshold:
``acts = pre * (pre > threshold)``. SAELens saves it the same way (as ``jumprelu``).

Under data parallelism (``TrainContext.sync``) the selection is over the *global* batch: each rank sends its
own ``k * global_batch`` largest pre-activations (the global winners are among them), every rank finds the
same global cut-off from the gathered candidates and keeps its entries above it, so the chosen pairs — and
the running threshold — are those of one process training on the whole batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.dictionaries import sparse_ops as so
from mechscope.dictionaries.base import TrainContext
from mechscope.dictionaries.registry import register
from mechscope.dictionaries.topk import TopKConfig, TopKDictionary
from mechscope.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class BatchTopKConfig(TopKConfig):
    """A BatchTopK sparse autoencoder (``k`` is the batch-average number of active latents)."""

    architecture = "batchtopk"

    threshold_momentum: float = 0.99
    """EMA momentum of the inference threshold (0 keeps only the last batch's minimum)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.threshold_momentum) and 0 <= self.threshold_momentum < 1):
            raise ConfigError(f"threshold_momentum must be in [0, 1), got {self.threshold_momentum!r}")


def batch_topk_relu(pre: Tensor, k: int) -> Tensor:
    """Dense ``[batch d_sae]``: the ``batch * k`` largest ReLU-ed entries of the whole batch."""
    acts = pre.relu()
    flat = acts.reshape(-1)
    top = flat.topk(min(k * acts.shape[0], flat.numel()), sorted=False)
    return torch.zeros_like(flat).scatter_(0, top.indices, top.values).view_as(pre)


@torch.no_grad()
def global_batch_topk(flat: Tensor, n_keep: int, sync: Any) -> tuple[Tensor, Tensor]:
    """This rank's share of the ``n_keep`` largest positive entries over every rank's ``flat``.

    Returns ``(indices into flat, every kept value of all ranks)``; one all-gather of ``n_keep`` candidate
    values per rank (ranks must hold equally many entries). Ties at the cut-off keep every tied entry.
    """
    cand = flat.topk(min(n_keep, flat.numel()), sorted=False).values.float()
    every = sync.gather_rows(cand)
    cut = every.topk(min(n_keep, every.numel()), sorted=False).values.min()
    keep = (flat.float() >= cut) & (flat > 0)
    return keep.nonzero().flatten(), every[(every >= cut) & (every > 0)]


@register
class BatchTopKDictionary(TopKDictionary):
    """Batch-level top-k in training, a learned global threshold at inference."""

    config_class = BatchTopKConfig
    cfg: BatchTopKConfig
    threshold: Tensor

    def __init__(self, cfg: BatchTopKConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros((), dtype=torch.float32))

    def activate(self, pre: Tensor) -> Tensor:
        thr = self.threshold.clamp_min(0).to(pre.dtype)
        return torch.where(pre > thr, pre, torch.zeros((), dtype=pre.dtype, device=pre.device))

    def train_activate(self, pre: Tensor, ctx: TrainContext) -> Tensor:
        return batch_topk_relu(pre, self.cfg.k)

    def _select(self, pre: Tensor, ctx: TrainContext) -> tuple[so.SparseCode, Tensor]:
        n = pre.shape[0]
        if ctx.sync is not None and ctx.sync.world_size > 1:
            chosen, kept = global_batch_topk(pre.reshape(-1), self.cfg.k * n * ctx.sync.world_size, ctx.sync)
        else:
            top = pre.reshape(-1).topk(min(self.cfg.k * n, pre.numel()), sorted=False)
            chosen, kept = top.indices[top.values > 0], None
        code = so.code_from_flat(chosen, n, self.cfg.d_sae)
        vals = pre.reshape(-1)[code.rows * self.cfg.d_sae + code.cols]
        self.update_threshold(vals if kept is None else kept)
        return code, vals

    @torch.no_grad()
    def update_threshold(self, kept: Tensor) -> None:
        """Fold the smallest kept activation of a batch into the running threshold."""
        if kept.numel() == 0:
            return
        low = kept.min().float()
        m = self.cfg.threshold_momentum
        first = bool(self.threshold == 0)
        self.threshold.copy_(low if first else m * self.threshold + (1 - m) * low)


__all__ = ["BatchTopKConfig", "BatchTopKDictionary", "batch_topk_relu", "global_batch_topk"]
