"""Transcoder (Dunefsky et al. 2024): a sparse code of one activation that predicts *another*.

Typically it reads the MLP input and predicts the MLP output, replacing the MLP by a sparse, interpretable
computation. Same maps as an SAE, except that ``W_dec [d_sae d_out]`` and ``b_dec [d_out]`` live in the
output space, the input is not centred by ``b_dec``, and an optional linear skip ``x @ W_skip``
(``W_skip [d_in d_out]``, zero-initialised) captures the linear part of the computation. The latent
nonlinearity is ReLU + decoder-norm L1 (``k=None``) or TopK (``k`` set). Trained on pairs
``(input, target)``; ``input_scale``/``output_scale`` normalise the two separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from mechscope.dictionaries.base import Dictionary, DictionaryConfig, DictOutput, TrainContext
from mechscope.dictionaries.registry import register
from mechscope.dictionaries.relu import weighted_l1
from mechscope.dictionaries.topk import topk_relu
from mechscope.errors import ConfigError


def check_output_space(cfg: DictionaryConfig, what: str) -> None:
    """Checks shared by the configs of dictionaries that predict another activation (transcoders, CLTs):
    ``b_dec`` in the output space, ``k`` within ``d_sae``, a finite non-negative L1 coefficient."""
    k, l1 = getattr(cfg, "k"), getattr(cfg, "l1_coefficient")  # noqa: B009 - fields of the subclasses
    if cfg.apply_b_dec_to_input:
        raise ConfigError(f"{what}'s b_dec is in the output space; apply_b_dec_to_input must be False")
    if k is not None and not 0 < k <= cfg.d_sae:
        raise ConfigError(f"k must be None or in [1, d_sae={cfg.d_sae}], got {k!r}")
    if not (math.isfinite(l1) and l1 >= 0):
        raise ConfigError(f"l1_coefficient must be finite and >= 0, got {l1!r}")


def predict_target(d: Dictionary, x: Tensor, skip: bool) -> DictOutput:
    """Encode, decode and add the skip term (shared by transcoders and CLTs): ``recons`` predicts the target.

    Each hook point fires once, and ``hook_sae_recons`` sees the whole prediction (skip included), which is
    what a splice writes into the target hook.
    """
    d.check_input(x)
    x_c = d.center(x)
    pre = d.hook_sae_acts_pre(d.pre_acts(x_c))
    acts = d.hook_sae_acts_post(d.activate(pre))
    out = d.decode_normalised(acts)
    if skip:
        out = out + d.skip(x_c)
    return DictOutput(d.hook_sae_recons(d.unscale_output(out)), acts, pre)


@dataclass(frozen=True, kw_only=True)
class TranscoderConfig(DictionaryConfig):
    """A transcoder from a ``d_in``-wide hook to a ``d_out``-wide hook."""

    architecture = "transcoder"

    d_out: int
    """Width of the predicted activation."""
    target_hook_name: str | None = None
    """Hook name of the predicted activation (e.g. ``blocks.3.hook_mlp_out``)."""
    skip: bool = False
    """Add a linear skip connection ``x @ W_skip``."""
    k: int | None = None
    """None: ReLU + L1; an int: TopK with this many active latents."""
    l1_coefficient: float = 1.0
    """Weight of the decoder-norm-weighted L1 penalty (ReLU only; ignored for TopK)."""
    apply_b_dec_to_input: bool = False
    """Must stay False: ``b_dec`` lives in the output space."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.d_out, int) or self.d_out <= 0:
            raise ConfigError(f"d_out must be a positive int, got {self.d_out!r}")
        check_output_space(self, "a transcoder")

    @property
    def d_output(self) -> int:
        return self.d_out


@register
class Transcoder(Dictionary):
    """Sparse prediction of one activation from another; see the module docstring."""

    config_class = TranscoderConfig
    cfg: TranscoderConfig

    def _init_encoder_bias(self) -> None:
        super()._init_encoder_bias()
        cfg = self.cfg
        assert isinstance(cfg, TranscoderConfig)
        if cfg.skip:
            self.W_skip = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_out, dtype=cfg.torch_dtype))

    def activate(self, pre: Tensor) -> Tensor:
        return torch.relu(pre) if self.cfg.k is None else topk_relu(pre, self.cfg.k)

    def skip(self, x_c: Tensor) -> Tensor | float:
        return x_c @ self.W_skip if self.cfg.skip else 0.0

    def forward(self, x: Float[Tensor, "... d_in"]) -> DictOutput:
        """Encode, decode and add the skip term: ``recons`` predicts the target activation (``predict_target``)."""
        return predict_target(self, x, skip=self.cfg.skip)

    def sparsity_loss(self, acts: Tensor, pre: Tensor, ctx: TrainContext) -> Tensor:
        if self.cfg.k is not None:
            return acts.new_zeros(())
        return self.cfg.l1_coefficient * ctx.sparsity_scale * weighted_l1(acts, self.decoder_norms())


__all__ = ["TranscoderConfig", "Transcoder", "check_output_space", "predict_target"]
