"""TopK dictionary (Gao et al. 2024): keep the k largest pre-activations per token, ReLU them.

Sparsity is set directly by ``k``, so there is no sparsity coefficient. Latents that stop firing are
revived by the **aux-k loss**: the ``k_aux`` largest pre-activations among dead latents must reconstruct
the residual ``target - recons`` (Gao et al., Appendix A.2), scaled down while few latents are dead.

Training uses the sparse kernels of ``sparse_ops``: one dense encoder matmul to choose latents, then
gathers and sparse products, so a step costs about a third of the dense ReLU step.
The gradient through the selection is the one of ``torch.topk``: identity on the chosen entries, zero
elsewhere (the selection itself is piecewise constant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mechscope.dictionaries import sparse_ops as so
from mechscope.dictionaries.base import Dictionary, DictionaryConfig, TrainContext, TrainOutput, zero
from mechscope.dictionaries.registry import register
from mechscope.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class TopKConfig(DictionaryConfig):
    """A TopK sparse autoencoder."""

    architecture = "topk"

    k: int = 32
    """Active latents per token."""
    aux_k: int | None = None
    """Dead latents used by the aux-k loss; None means d_in // 2 (Gao et al.)."""
    aux_coefficient: float = 1.0 / 32
    """Weight of the aux-k loss (Gao et al. use 1/32)."""
    unit_norm_decoder: bool = True
    """TopK keeps decoder rows at unit norm."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.k, int) or not 0 < self.k <= self.d_sae:
            raise ConfigError(f"k must be an int in [1, d_sae={self.d_sae}], got {self.k!r}")
        if self.aux_k is not None and not 0 < self.aux_k <= self.d_sae:
            raise ConfigError(f"aux_k must be None or in [1, d_sae={self.d_sae}], got {self.aux_k!r}")
        if not (math.isfinite(self.aux_coefficient) and self.aux_coefficient >= 0):
            raise ConfigError(f"aux_coefficient must be finite and >= 0, got {self.aux_coefficient!r}")


def topk_relu(pre: Tensor, k: int) -> Tensor:
    """Dense ``[... d_sae]``: the k largest entries of each row, ReLU-ed, zeros elsewhere."""
    top = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu())


@register
class TopKDictionary(Dictionary):
    """``acts = relu(topk(x_c @ W_enc + b_enc, k))``; see the module docstring."""

    config_class = TopKConfig
    cfg: TopKConfig

    def activate(self, pre: Tensor) -> Tensor:
        return topk_relu(pre, self.cfg.k)

    def _select(self, pre: Tensor, ctx: TrainContext) -> tuple[so.SparseCode, Tensor]:
        """Choose the pairs of this step from no-grad dense pre-activations ``[batch d_sae]``."""
        top = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return so.code_from_topk(top.indices, self.cfg.d_sae), top.values.reshape(-1)

    def training_losses(self, x: Tensor, target: Tensor, ctx: TrainContext) -> TrainOutput:
        """Sparse fast path; equal (up to rounding) to the dense reference in ``Dictionary``."""
        x_c = self.center(x)
        target = self.scale_target(target)
        with torch.no_grad():
            pre = self.pre_acts(x_c)
        code, pre_vals = self._select(pre, ctx)
        vals = self._chosen_acts(x_c, code, pre_vals)
        recons = so.sparse_decode(code, vals, self.W_dec) + self.b_dec + self.skip(x_c)
        mse = (recons - target).pow(2).sum() / x.shape[0]
        aux = self._aux_k_loss(x_c, target, recons, pre, ctx)
        sparsity = self._sparse_sparsity_loss(code, vals, ctx)
        with torch.no_grad():
            fired = so.fired_counts(code, vals, self.cfg.d_sae)
            l0 = fired.sum() / x.shape[0]
        return TrainOutput(mse + sparsity + aux, mse, sparsity, aux, recons.detach(), fired, l0)

    def _chosen_acts(self, x_c: Tensor, code: so.SparseCode, pre_vals: Tensor) -> Tensor:
        """Differentiable ReLU-ed pre-activations at the chosen pairs. Values chosen under bf16 autocast are
        recomputed exactly in the parameters' dtype first (only the selection may round)."""
        if pre_vals.dtype != self.W_enc.dtype:
            pre_vals = so.exact_pre(code, x_c, self.W_enc, self.b_enc)
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else None
        return so.gather_pre(x_c, self.W_enc, self.b_enc, b_dec, code, pre_vals).relu()

    def _sparse_sparsity_loss(self, code: so.SparseCode, vals: Tensor, ctx: TrainContext) -> Tensor:
        return zero(vals)

    def _aux_k_loss(self, x_c: Tensor, target: Tensor, recons: Tensor, pre: Tensor, ctx: TrainContext) -> Tensor:
        """Aux-k: the top dead latents reconstruct the detached residual (0 when none are dead)."""
        dead = ctx.dead_mask
        n_dead = int(dead.sum()) if dead is not None else 0
        if n_dead == 0 or self.cfg.aux_coefficient == 0:
            return zero(recons)
        assert dead is not None
        k_aux_full = self.cfg.aux_k or max(self.cfg.d_in // 2, 1)
        k_aux = min(k_aux_full, n_dead)
        with torch.no_grad():
            top = pre.masked_fill(~dead, -torch.inf).topk(k_aux, dim=-1, sorted=False)
        code = so.code_from_topk(top.indices, self.cfg.d_sae)
        vals = self._chosen_acts(x_c, code, top.values.reshape(-1))
        residual = (target - recons).detach()
        err = so.sparse_decode(code, vals, self.W_dec) - residual
        scale = min(n_dead / k_aux_full, 1.0)
        return self.cfg.aux_coefficient * scale * err.pow(2).sum() / x_c.shape[0]


__all__ = ["TopKConfig", "TopKDictionary", "topk_relu"]
