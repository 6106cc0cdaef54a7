"""Gated dictionary (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated SAEs").

Deciding *which* latents fire and *how strongly* are separate paths sharing directions:

    pi_gate = x_c @ W_enc + b_gate                     f_gate = H(pi_gate)
    pi_mag  = x_c @ (W_enc * exp(r_mag)) + b_mag       f_mag  = relu(pi_mag)
    acts    = f_gate * f_mag

The L1 penalty acts on ``relu(pi_gate)`` only (so it does not shrink magnitudes), and an auxiliary loss
makes the gate path alone reconstruct the input through a frozen copy of the decoder:
``|| x - (relu(pi_gate) @ sg(W_dec) + sg(b_dec)) ||^2``. Decoder rows are kept at unit norm.
Parameter names match SAELens (``b_gate``, ``r_mag``, ``b_mag``; no ``b_enc``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mechscope.dictionaries.base import Dictionary, DictionaryConfig, TrainContext, TrainOutput, squared_error
from mechscope.dictionaries.registry import register
from mechscope.dictionaries.relu import weighted_l1
from mechscope.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class GatedConfig(DictionaryConfig):
    """A gated sparse autoencoder."""

    architecture = "gated"

    l1_coefficient: float = 1.0
    """Weight of the L1 penalty on the gate path."""
    unit_norm_decoder: bool = True
    """The paper keeps decoder rows at unit norm."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.l1_coefficient) and self.l1_coefficient >= 0):
            raise ConfigError(f"l1_coefficient must be finite and >= 0, got {self.l1_coefficient!r}")


@register
class GatedDictionary(Dictionary):
    """Gate decides, magnitude path sizes; see the module docstring."""

    config_class = GatedConfig
    cfg: GatedConfig
    b_gate: nn.Parameter
    r_mag: nn.Parameter
    b_mag: nn.Parameter

    def _init_encoder_bias(self) -> None:
        d, dt = self.cfg.d_sae, self.cfg.torch_dtype
        self.b_gate = nn.Parameter(torch.zeros(d, dtype=dt))
        self.r_mag = nn.Parameter(torch.zeros(d, dtype=dt))
        self.b_mag = nn.Parameter(torch.zeros(d, dtype=dt))

    def gate_pre(self, x_c: Tensor) -> Tensor:
        """``pi_gate = x_c @ W_enc + b_gate``."""
        return x_c @ self.W_enc + self.b_gate

    def pre_acts(self, x_c: Tensor) -> Tensor:
        """The magnitude path ``pi_mag`` (what ``hook_sae_acts_pre`` shows)."""
        return x_c @ (self.W_enc * self.r_mag.exp()) + self.b_mag

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.check_input(x)
        x_c = self.center(x)
        pre = self.hook_sae_acts_pre(self.pre_acts(x_c))
        acts = (self.gate_pre(x_c) > 0).to(pre.dtype) * torch.relu(pre)
        return self.hook_sae_acts_post(acts), pre

    def activate(self, pre: Tensor) -> Tensor:
        raise NotImplementedError("a gated dictionary's activation needs the gate path; call encode(x)")

    def training_losses(self, x: Tensor, target: Tensor, ctx: TrainContext) -> TrainOutput:
        """Reconstruction + gate-path L1 + auxiliary gate reconstruction (module docstring)."""
        x_c = self.center(x)
        target = self.scale_target(target)
        shared = x_c @ self.W_enc  # one matmul for both paths: x_c @ (W_enc * e^r) == (x_c @ W_enc) * e^r
        gate = shared + self.b_gate
        pre = torch.addcmul(self.b_mag, shared, self.r_mag.exp())
        acts = torch.where(gate > 0, torch.relu(pre), 0.0)
        recons = self.decode_normalised(acts)
        mse = squared_error(recons, target)
        gate_act = torch.relu(gate)
        sparsity = self.cfg.l1_coefficient * ctx.sparsity_scale * weighted_l1(gate_act, self.decoder_norms())
        via_gate = gate_act @ self.W_dec.detach() + self.b_dec.detach()
        aux = squared_error(via_gate, target)
        with torch.no_grad():
            fired = (acts != 0).sum(0)
            l0 = fired.sum() / x.shape[0]
        return TrainOutput(mse + sparsity + aux, mse, sparsity, aux, recons.detach(), fired, l0)


__all__ = ["GatedConfig", "GatedDictionary"]
