"""Acausal crosscoder (Lindsey et al. 2024): one sparse code read from and written to several layers.

Input ``x [... n_layers d_in]`` (e.g. the residual stream at every layer). Each latent has an encoder
slice and a decoder direction per layer:

    pre    = sum_l x_c[l] @ W_enc[l] + b_enc          W_enc [n_layers d_in d_sae]
    acts   = relu(pre)
    recons = acts @ W_dec + b_dec                      W_dec [d_sae n_layers d_in], b_dec [n_layers d_in]

and the sparsity penalty weights each activation by the **sum** of its decoder norms over layers,
``l1_coefficient * sum_i acts_i * sum_l ||W_dec[i, l]||``, so a latent pays for every layer it writes to.
Both maps are single matmuls over the flattened ``(n_layers d_in)`` axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mechscope.dictionaries.base import Dictionary, DictionaryConfig, TrainContext
from mechscope.dictionaries.registry import register
from mechscope.dictionaries.relu import weighted_l1
from mechscope.errors import ConfigError, ShapeError


@dataclass(frozen=True, kw_only=True)
class CrosscoderConfig(DictionaryConfig):
    """An acausal ReLU crosscoder over ``n_layers`` activations of width ``d_in``."""

    architecture = "crosscoder"

    n_layers: int
    """Number of activations (layers) read and written."""
    hook_names: tuple[str, ...] | None = None
    """Hook name of each layer's activation, in order (None if unknown)."""
    l1_coefficient: float = 1.0
    """Weight of the summed-decoder-norm L1 penalty."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.n_layers, int) or self.n_layers <= 0:
            raise ConfigError(f"n_layers must be a positive int, got {self.n_layers!r}")
        if self.hook_names is not None and len(self.hook_names) != self.n_layers:
            raise ConfigError(f"hook_names has {len(self.hook_names)} names but n_layers={self.n_layers}")
        if not (math.isfinite(self.l1_coefficient) and self.l1_coefficient >= 0):
            raise ConfigError(f"l1_coefficient must be finite and >= 0, got {self.l1_coefficient!r}")


@register
class Crosscoder(Dictionary):
    """Reads and writes ``n_layers`` activations; see the module docstring."""

    config_class = CrosscoderConfig
    cfg: CrosscoderConfig

    def _init_params(self, gen: torch.Generator) -> None:
        cfg, dt = self.cfg, self.cfg.torch_dtype
        assert isinstance(cfg, CrosscoderConfig)
        w_dec = torch.randn(cfg.d_sae, cfg.n_layers, cfg.d_in, generator=gen)
        w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True) * cfg.decoder_init_norm
        self.W_dec = nn.Parameter(w_dec.to(dt))
        self.W_enc = nn.Parameter(w_dec.permute(1, 2, 0).contiguous().to(dt))
        self.b_dec = nn.Parameter(torch.zeros(cfg.n_layers, cfg.d_in, dtype=dt))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dt))

    def check_input(self, x: Tensor, width: int | None = None, what: str = "crosscoder input") -> None:
        want = (self.cfg.n_layers, self.cfg.d_in)
        if x.ndim < 2 or tuple(x.shape[-2:]) != want:
            raise ShapeError(f"{what}: expected shape [..., {want[0]}, {want[1]}] (n_layers, d_in), "
                             f"got {tuple(x.shape)}")

    def pre_acts(self, x_c: Tensor) -> Tensor:
        lead = x_c.shape[:-2]
        flat = x_c.reshape(-1, self.cfg.n_layers * self.cfg.d_in)
        return torch.addmm(self.b_enc, flat, self.W_enc.reshape(-1, self.cfg.d_sae)).view(*lead, self.cfg.d_sae)

    def decode_normalised(self, acts: Tensor) -> Tensor:
        flat = acts.reshape(-1, self.cfg.d_sae) @ self.W_dec.reshape(self.cfg.d_sae, -1)
        return flat.view(*acts.shape[:-1], self.cfg.n_layers, self.cfg.d_in) + self.b_dec

    def decoder_norms(self) -> Tensor:
        """``[d_sae]`` decoder norms summed over layers."""
        return self.W_dec.norm(dim=-1).sum(-1)

    def activate(self, pre: Tensor) -> Tensor:
        return torch.relu(pre)

    def sparsity_loss(self, acts: Tensor, pre: Tensor, ctx: TrainContext) -> Tensor:
        return self.cfg.l1_coefficient * ctx.sparsity_scale * weighted_l1(acts, self.decoder_norms())


__all__ = ["CrosscoderConfig", "Crosscoder"]
