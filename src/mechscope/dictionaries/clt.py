"""Cross-layer transcoder (CLT; Ameisen et al. 2025): features read at layer l, written to layers l..L-1.

Input ``x [... n_layers d_in]``: the MLP input of every layer (e.g. ``blocks.l.ln2.hook_normalized``);
prediction ``[... n_layers d_out]``: the MLP output of every layer (``blocks.l.hook_mlp_out``). Layer
``s`` has ``d_sae`` features, encoded from its own input only, and each decodes into every layer
``t >= s``::

    pre[s]   = x_s[s] @ W_enc[s] + b_enc[s]                 W_enc [n_layers d_in d_sae], b_enc [n_layers d_sae]
    acts[s]  = relu(pre[s])      (or TopK per layer when k is set)
    out[t]   = sum_{s <= t} acts[s] @ W_dec[pair(s, t)] + b_dec[t] (+ x_s[t] @ W_skip[t])

``W_dec [n_pairs d_sae d_out]`` stores only the causal pairs ``(s, t), s <= t`` in the order of
:func:`pairs` (``n_pairs = n_layers (n_layers + 1) / 2``); decoding is one gather, one batched matmul and
one ``index_add`` over target layers. Scales: inputs share ``input_scale``; target layer ``t`` is normalised by
``output_scale * layer_output_scales[t]`` (MLP outputs of one model differ in size by 40x across layers, so with
``normalize_activations="expected_norm"`` the trainer gives every layer a mean norm of ``sqrt(d_out)``: the loss
then weighs the layers equally instead of being dominated by the last one). ``skip=True`` adds a per-layer linear skip (a skip CLT); a single-layer
skip transcoder is ``Transcoder`` with ``skip=True``. The sparsity penalty weights each activation by the
sum of its decoder norms over the layers it writes (a feature pays for every layer), as for crosscoders.

Dead-latent bookkeeping in the trainer is per feature index (``d_sae``): index ``i`` counts as firing if
feature ``i`` of any layer fires.
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
from mechscope.dictionaries.transcoder import check_output_space, predict_target
from mechscope.errors import ConfigError, ShapeError


def pairs(n_layers: int) -> tuple[Tensor, Tensor]:
    """``(source, target)`` layer index of every decoder pair ``s <= t``, sources in order."""
    s, t = torch.triu_indices(n_layers, n_layers)
    return s, t


@dataclass(frozen=True, kw_only=True)
class CLTConfig(DictionaryConfig):
    """A cross-layer transcoder over ``n_layers`` layers (``d_sae`` features per layer)."""

    architecture = "clt"

    n_layers: int
    """Number of layers read and written."""
    d_out: int
    """Width of each layer's prediction (d_model for MLP outputs)."""
    hook_names: tuple[str, ...] | None = None
    """Input hook of each layer, in order (e.g. ``blocks.l.ln2.hook_normalized``)."""
    target_hook_names: tuple[str, ...] | None = None
    """Predicted hook of each layer, in order (e.g. ``blocks.l.hook_mlp_out``)."""
    skip: bool = False
    """Add a per-layer linear skip ``x[t] @ W_skip[t]``."""
    k: int | None = None
    """None: ReLU + L1; an int: TopK with this many active features per layer."""
    l1_coefficient: float = 1.0
    """Weight of the summed-decoder-norm L1 penalty (ReLU only)."""
    apply_b_dec_to_input: bool = False
    """Must stay False: ``b_dec`` lives in the output space."""
    layer_output_scales: tuple[float, ...] | None = None
    """Per target layer factor on ``output_scale`` (None: all 1); set by the trainer with ``expected_norm``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_layers", "d_out"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"CLTConfig.{name} must be a positive int, got {v!r}")
        for name in ("hook_names", "target_hook_names"):
            v = getattr(self, name)
            if v is not None and len(v) != self.n_layers:
                raise ConfigError(f"{name} has {len(v)} names but n_layers={self.n_layers}")
        ls = self.layer_output_scales
        if ls is not None and (len(ls) != self.n_layers or not all(math.isfinite(v) and v > 0 for v in ls)):
            raise ConfigError(f"layer_output_scales must be {self.n_layers} positive finite numbers, got {ls!r}")
        check_output_space(self, "a CLT")

    @property
    def d_output(self) -> int:
        return self.d_out

    @property
    def n_pairs(self) -> int:
        """Number of (source, target) decoder blocks."""
        return self.n_layers * (self.n_layers + 1) // 2


@register
class CrossLayerTranscoder(Dictionary):
    """Reads every layer's MLP input, writes every later MLP output; see the module docstring."""

    config_class = CLTConfig
    cfg: CLTConfig
    pair_source: Tensor
    pair_target: Tensor

    def _init_params(self, gen: torch.Generator) -> None:
        cfg, dt = self.cfg, self.cfg.torch_dtype
        n, p = cfg.n_layers, cfg.n_pairs
        w_dec = torch.randn(p, cfg.d_sae, cfg.d_out, generator=gen)
        w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True) * cfg.decoder_init_norm / math.sqrt(n)
        self.W_dec = nn.Parameter(w_dec.to(dt))
        w_enc = torch.randn(n, cfg.d_in, cfg.d_sae, generator=gen) * (cfg.decoder_init_norm / math.sqrt(cfg.d_in))
        self.W_enc = nn.Parameter(w_enc.to(dt))
        self.b_enc = nn.Parameter(torch.zeros(n, cfg.d_sae, dtype=dt))
        self.b_dec = nn.Parameter(torch.zeros(n, cfg.d_out, dtype=dt))
        if cfg.skip:
            self.W_skip = nn.Parameter(torch.zeros(n, cfg.d_in, cfg.d_out, dtype=dt))
        src, tgt = pairs(n)
        self.register_buffer("pair_source", src, persistent=False)
        self.register_buffer("pair_target", tgt, persistent=False)

    def check_input(self, x: Tensor, width: int | None = None, what: str = "CLT input") -> None:
        want = (self.cfg.n_layers, self.cfg.d_in if width is None else width)
        if x.ndim < 2 or tuple(x.shape[-2:]) != want:
            raise ShapeError(f"{what}: expected shape [..., {want[0]}, {want[1]}] (n_layers, d_in), got "
                             f"{tuple(x.shape)}")

    def pre_acts(self, x_c: Tensor) -> Tensor:
        """``[... n_layers d_sae]``: each layer's features from its own input (one batched matmul)."""
        lead = x_c.shape[:-2]
        flat = x_c.reshape(-1, self.cfg.n_layers, self.cfg.d_in).transpose(0, 1)  # [L N d]
        pre = torch.baddbmm(self.b_enc[:, None, :], flat, self.W_enc)  # [L N k]
        return pre.transpose(0, 1).reshape(*lead, self.cfg.n_layers, self.cfg.d_sae)

    def activate(self, pre: Tensor) -> Tensor:
        return torch.relu(pre) if self.cfg.k is None else topk_relu(pre, self.cfg.k)

    def decode_normalised(self, acts: Tensor) -> Tensor:
        """``[... n_layers d_sae] -> [... n_layers d_out]``: sum over source layers <= each target."""
        lead = acts.shape[:-2]
        flat = acts.reshape(-1, self.cfg.n_layers, self.cfg.d_sae)
        per_pair = torch.bmm(flat[:, self.pair_source].transpose(0, 1), self.W_dec)  # [P N d_out]
        out = flat.new_zeros(self.cfg.n_layers, flat.shape[0], self.cfg.d_out)
        out.index_add_(0, self.pair_target, per_pair)
        return (out.transpose(0, 1) + self.b_dec).reshape(*lead, self.cfg.n_layers, self.cfg.d_out)

    def skip(self, x_c: Tensor) -> Tensor | float:
        if not self.cfg.skip:
            return 0.0
        return torch.einsum("...ld,lde->...le", x_c, self.W_skip)

    def forward(self, x: Float[Tensor, "... n_layers d_in"]) -> DictOutput:
        """Encode every layer, decode into every later layer (skip included) in the input's units."""
        return predict_target(self, x, skip=self.cfg.skip)

    def output_scales(self) -> Float[Tensor, " n_layers"]:
        """Each target layer's normalising scale: ``output_scale * layer_output_scales[t]``."""
        ls = self.cfg.layer_output_scales or (1.0,) * self.cfg.n_layers
        return torch.tensor(ls, dtype=self.W_dec.dtype, device=self.W_dec.device) * self.cfg.output_scale

    def unscale_output(self, out: Tensor) -> Tensor:
        """``[... n_layers d_out]`` normalised prediction -> model units (each layer by its own scale)."""
        if self.cfg.layer_output_scales is None:
            return super().unscale_output(out)
        return out / self.output_scales().to(out.dtype)[:, None]

    def scale_target(self, target: Tensor) -> Tensor:
        target = target.to(self.W_dec.dtype)
        if self.cfg.layer_output_scales is None:
            return super().scale_target(target)
        return target * self.output_scales()[:, None]

    @torch.no_grad()
    def init_output_scales(self, targets: Tensor) -> None:
        """Give every target layer a mean norm of ``sqrt(d_out)`` (targets ``[N n_layers d_out]``, raw units)."""
        norms = targets.reshape(-1, self.cfg.n_layers, self.cfg.d_out).double().norm(dim=-1).mean(0)
        scales = (self.cfg.d_out ** 0.5) / norms.clamp_min(1e-12)
        self.with_config(layer_output_scales=tuple(float(v) for v in scales / self.cfg.output_scale))

    def decoder_vectors(self, layer: int) -> Tensor:
        """``[d_sae n_layers d_out]``: what each feature of ``layer`` writes to every layer (0 before it),
        in the output's units."""
        n = self.cfg.n_layers
        if not 0 <= layer < n:
            raise ConfigError(f"layer must be in [0, {n}), got {layer}")
        out = self.W_dec.new_zeros(self.cfg.d_sae, n, self.cfg.d_out)
        idx = (self.pair_source == layer).nonzero()[:, 0]
        out[:, self.pair_target[idx]] = self.W_dec[idx].transpose(0, 1)
        return out / self.output_scales()[None, :, None]

    def decoder_norms(self) -> Tensor:
        """``[n_layers d_sae]``: each feature's decoder norm summed over the layers it writes."""
        norms = self.W_dec.norm(dim=-1)  # [P d_sae]
        out = norms.new_zeros(self.cfg.n_layers, self.cfg.d_sae)
        return out.index_add(0, self.pair_source, norms)

    def sparsity_loss(self, acts: Tensor, pre: Tensor, ctx: TrainContext) -> Tensor:
        if self.cfg.k is not None:
            return acts.new_zeros(())
        n = self.cfg.n_layers
        flat = acts.reshape(-1, n * self.cfg.d_sae)
        return self.cfg.l1_coefficient * ctx.sparsity_scale * weighted_l1(flat, self.decoder_norms().reshape(-1))

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """No decoder projection: CLT decoders are not unit-norm (the L1 weights their norms)."""

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Nothing to renormalise."""


__all__ = ["CLTConfig", "CrossLayerTranscoder", "pairs"]
