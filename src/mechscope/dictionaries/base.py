"""The ``Dictionary`` base: a sparse, overcomplete linear code for one activation (or several).

A dictionary maps an activation ``x [... d_in]`` to latent activations ``acts [... d_sae]`` (few non-zero)
and back to a reconstruction ``recons [... d_out]`` (``d_out == d_in`` for an SAE; a transcoder predicts a
different activation). Every variant shares the affine maps, in SAELens's layout::

    x_s    = input_scale * x                        (input normalisation, recorded in the config)
    x_c    = x_s - b_dec        if apply_b_dec_to_input
    pre    = x_c @ W_enc + b_enc                    W_enc [d_in d_sae], b_enc [d_sae]
    acts   = activate(pre)                          (the variant: ReLU, TopK, JumpReLU, ...)
    recons = (acts @ W_dec + b_dec) / output_scale  W_dec [d_sae d_out], b_dec [d_out]

Variants differ only in ``activate``, their sparsity penalty and auxiliary losses, and are identified by
their config type (``architecture`` class variable) through ``registry``; nothing shared branches on the
architecture name. Training goes through :meth:`Dictionary.training_losses`, which variants may override
with faster sparse paths (TopK decodes with a gather instead of a dense matmul).

The dictionary carries hook points ``hook_sae_input``, ``hook_sae_acts_pre``, ``hook_sae_acts_post`` and
``hook_sae_recons``; once spliced into a model at hook ``H`` they become ``H.hook_sae_acts_post`` etc.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor, nn

from mechscope.errors import ConfigError, ShapeError
from mechscope.hooks.module import HookedModule
from mechscope.hooks.point import HookPoint
from mechscope.validation import check_types

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


@dataclass(frozen=True, kw_only=True)
class DictionaryConfig:
    """Shape, provenance and input handling shared by every dictionary (subclassed per variant)."""

    architecture: ClassVar[str] = ""

    d_in: int
    """Width of the activation read (e.g. d_model for a residual-stream SAE)."""
    d_sae: int
    """Number of latents (dictionary size)."""
    hook_name: str | None = None
    """TransformerLens hook name the dictionary reads (``blocks.3.hook_resid_post``); None if unknown."""
    model_name: str | None = None
    """Name of the model whose activations were used; None if unknown."""
    dtype: Literal["float32", "float64", "bfloat16"] = "float32"
    """Parameter dtype."""
    normalize_activations: Literal["none", "expected_norm"] = "none"
    """``expected_norm``: the trainer sets ``input_scale`` so that E||x_s|| = sqrt(d_in) (Anthropic)."""
    input_scale: float = 1.0
    """Multiplier applied to inputs before encoding (recorded so inference matches training)."""
    output_scale: float = 1.0
    """Reconstructions are divided by this (equals ``input_scale`` for an SAE)."""
    apply_b_dec_to_input: bool = True
    """Subtract ``b_dec`` from the input before encoding (standard SAE centring)."""
    unit_norm_decoder: bool = False
    """Keep every decoder row at unit norm after each optimiser step (and project out radial gradients)."""
    decoder_init_norm: float = 0.1
    """Norm of each decoder row at initialisation (W_enc starts as W_dec transposed)."""
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
    """How the trainer initialises ``b_dec`` from the first batch."""
    seed: int = 0
    """Seed of the weight initialisation."""

    def __post_init__(self) -> None:
        check_types(self, f"{type(self).__name__}.")
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{type(self).__name__}.{name} must be a positive int, got {value!r}")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        for name in ("input_scale", "output_scale", "decoder_init_norm"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite positive number, got {value!r}")
        if self.normalize_activations not in ("none", "expected_norm"):
            raise ConfigError(
                f"normalize_activations must be 'none' or 'expected_norm', got {self.normalize_activations!r}"
            )
        if self.b_dec_init not in ("geometric_median", "mean", "zeros"):
            raise ConfigError(f"b_dec_init must be geometric_median, mean or zeros, got {self.b_dec_init!r}")

    @property
    def d_output(self) -> int:
        """Width of the reconstruction (``d_in`` unless a transcoder says otherwise)."""
        return self.d_in

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype of the parameters."""
        return _DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict including ``architecture``."""
        out = dataclasses.asdict(self)
        out["architecture"] = self.architecture
        return out


class DictOutput(NamedTuple):
    """What a dictionary computes on a batch (leading dims ``...`` are kept)."""

    recons: Tensor
    """Reconstruction (or prediction, for a transcoder) ``[... d_out]`` in the input's units."""
    acts: Tensor
    """Latent activations after the nonlinearity ``[... d_sae]`` (mostly zeros)."""
    acts_pre: Tensor
    """Latent pre-activations ``[... d_sae]`` (for gated: the magnitude path)."""


class TrainContext(NamedTuple):
    """Per-step inputs from the trainer to a dictionary's training loss."""

    sparsity_scale: float
    """Warm-up multiplier in [0, 1] applied to the sparsity coefficient."""
    dead_mask: Tensor | None
    """Bool ``[d_sae]``: latents that have not fired for the trainer's dead window (None before known)."""
    step: int
    """Index of this optimiser step."""
    stats: bool = True
    """Whether this step's ``TrainOutput.fired`` must be exact counts and ``l0`` exact (the trainer asks
    only on logging steps). When False, fast paths may return ``fired`` as 0/1 (whether each latent fired
    at all: all that dead-latent tracking needs) and ``l0`` as NaN, saving passes over ``[batch d_sae]``."""
    sync: Any = None
    """The trainer's ``mechscope.distributed.Sync`` under data parallelism (None for one process): a
    selection over the whole batch (BatchTopK) must see every rank's share of the global batch."""


class TrainOutput(NamedTuple):
    """Losses and cheap statistics of one training step (all scalars are 0-dim tensors)."""

    loss: Tensor
    """Total loss to back-propagate."""
    mse: Tensor
    """Squared error summed over features, averaged over tokens, in the normalised units."""
    sparsity: Tensor
    """Sparsity penalty already multiplied by its (warmed-up) coefficient; 0 for TopK variants."""
    aux: Tensor
    """Auxiliary loss (aux-k for dead latents, gated aux reconstruction, ...); 0 if none."""
    recons: Tensor
    """Detached reconstruction ``[batch d_out]`` in normalised units (for explained variance)."""
    fired: Tensor
    """Int ``[d_sae]``: in how many tokens of the batch each latent was non-zero."""
    l0: Tensor
    """Mean number of active latents per token."""


def zero(ref: Tensor) -> Tensor:
    """A 0-dim zero with ``ref``'s dtype and device."""
    return ref.new_zeros(())


def compute_dtype(ref: Tensor) -> torch.dtype:
    """The dtype heavy matmuls run in: bf16 under a CPU/CUDA autocast to bf16, else ``ref``'s dtype."""
    dev = ref.device.type
    if torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev) == torch.bfloat16:
        return torch.bfloat16
    return ref.dtype



class Dictionary(HookedModule):
    """Base class of every sparse dictionary; subclasses implement ``activate`` (see module docstring)."""

    config_class: ClassVar[type[DictionaryConfig]] = DictionaryConfig
    W_enc: nn.Parameter
    b_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter

    def __init__(self, cfg: DictionaryConfig) -> None:
        super().__init__()
        if not isinstance(cfg, self.config_class):
            raise ConfigError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(cfg).__name__}")
        self.cfg = cfg
        gen = torch.Generator().manual_seed(cfg.seed)
        self._init_params(gen)
        self.hook_sae_input = HookPoint()
        self.hook_sae_acts_pre = HookPoint()
        self.hook_sae_acts_post = HookPoint()
        self.hook_sae_recons = HookPoint()
        self.setup()

    # -- parameters ---------------------------------------------------------------------------------
    def _init_params(self, gen: torch.Generator) -> None:
        """Tied init (W_enc = W_dec^T, rows of norm ``decoder_init_norm``), zero biases."""
        cfg, dt = self.cfg, self.cfg.torch_dtype
        w_dec = torch.randn(cfg.d_sae, cfg.d_output, generator=gen, dtype=torch.float32)
        w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True) * cfg.decoder_init_norm
        self.W_dec = nn.Parameter(w_dec.to(dt))
        w_enc = w_dec.t() if cfg.d_output == cfg.d_in else torch.randn(cfg.d_in, cfg.d_sae, generator=gen) * (
            cfg.decoder_init_norm / math.sqrt(cfg.d_in)
        )
        self.W_enc = nn.Parameter(w_enc.contiguous().to(dt))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_output, dtype=dt))
        self._init_encoder_bias()

    def _init_encoder_bias(self) -> None:
        """Create ``b_enc``; variants with other encoder parameters (gated, jumprelu) override."""
        self.b_enc = nn.Parameter(torch.zeros(self.cfg.d_sae, dtype=self.cfg.torch_dtype))

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    # -- the maps -----------------------------------------------------------------------------------
    def check_input(self, x: Tensor, width: int | None = None, what: str = "dictionary input") -> None:
        """Raise ``ShapeError`` unless ``x`` ends in the expected width."""
        width = self.cfg.d_in if width is None else width
        if x.ndim < 1 or x.shape[-1] != width:
            raise ShapeError(
                f"{what}: expected shape [..., {width}] ({self.cfg.hook_name or 'd_in'}), got {tuple(x.shape)}; "
                f"this {self.cfg.architecture} dictionary was trained on width {width}"
            )

    def scaled_input(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        """The hooked, scaled input (``x_s`` in the module docstring), before ``b_dec`` is subtracted."""
        x = self.hook_sae_input(x.to(self.W_enc.dtype))
        return x * self.cfg.input_scale if self.cfg.input_scale != 1.0 else x

    def center(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        """Scale and centre the input (``x_c`` in the module docstring)."""
        x = self.scaled_input(x)
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    def pre_acts(self, x_c: Tensor) -> Tensor:
        """Encoder pre-activations from centred input: ``x_c @ W_enc + b_enc``."""
        return torch.addmm(self.b_enc, x_c.reshape(-1, x_c.shape[-1]), self.W_enc).view(
            *x_c.shape[:-1], self.cfg.d_sae
        )

    def activate(self, pre: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_sae"]:
        """The variant's nonlinearity (inference semantics)."""
        raise NotImplementedError

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Latent activations of ``x``."""
        return self._encode(x)[0]

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.check_input(x)
        pre = self.hook_sae_acts_pre(self.pre_acts(self.center(x)))
        return self.hook_sae_acts_post(self.activate(pre)), pre

    def decode_normalised(self, acts: Tensor) -> Tensor:
        """``acts @ W_dec + b_dec`` in normalised units (no output scaling)."""
        flat = acts.reshape(-1, acts.shape[-1])
        return torch.addmm(self.b_dec, flat, self.W_dec).view(*acts.shape[:-1], *self.b_dec.shape)

    def decode(self, acts: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_out"]:
        """Reconstruction from latent activations, in the input's units."""
        return self.hook_sae_recons(self.unscale_output(self.decode_normalised(acts)))

    def unscale_output(self, out: Tensor) -> Tensor:
        """A prediction in normalised units -> the model's units (divided by ``output_scale``)."""
        return out / self.cfg.output_scale if self.cfg.output_scale != 1.0 else out

    @torch.no_grad()
    def init_output_scales(self, targets: Tensor) -> None:
        """Finer output scales than the scalar ``output_scale`` (CLTs: one per layer), from sample targets in
        raw units; the trainer calls it with ``expected_norm``. Default: none."""

    def forward(self, x: Float[Tensor, "... d_in"]) -> DictOutput:
        """Encode and decode; usable inside a hook: ``lambda x, hook: sae(x).recons``."""
        acts, pre = self._encode(x)
        return DictOutput(self.decode(acts), acts, pre)

    # -- training -----------------------------------------------------------------------------------
    def sparsity_loss(self, acts: Tensor, pre: Tensor, ctx: TrainContext) -> Tensor:
        """Sparsity penalty (already multiplied by coefficient and warm-up); default none."""
        return zero(acts)

    def aux_loss(self, x_c: Tensor, target: Tensor, acts: Tensor, pre: Tensor, recons: Tensor,
                 ctx: TrainContext) -> Tensor:
        """Auxiliary loss; default none."""
        return zero(acts)

    def training_losses(self, x: Tensor, target: Tensor, ctx: TrainContext) -> TrainOutput:
        """Losses on a batch ``x [batch d_in]`` predicting ``target [batch d_out]`` (both raw units).

        Dense reference path through autograd; fast variants override it and must agree with it.
        """
        x_c = self.center(x)
        target = self.scale_target(target)
        pre = self.pre_acts(x_c)
        acts = self.train_activate(pre, ctx)
        recons = self.decode_normalised(acts) + self.skip(x_c)
        mse = squared_error(recons, target)
        sparsity = self.sparsity_loss(acts, pre, ctx)
        aux = self.aux_loss(x_c, target, acts, pre, recons, ctx)
        with torch.no_grad():
            active = acts.reshape(-1, acts.shape[-1]) != 0
            fired = active.sum(0)
            l0 = fired.sum() / max(active.shape[0], 1)
        return TrainOutput(mse + sparsity + aux, mse, sparsity, aux, recons.detach(), fired, l0)

    def train_activate(self, pre: Tensor, ctx: TrainContext) -> Tensor:
        """The nonlinearity during training (differs from ``activate`` for BatchTopK, JumpReLU's STE)."""
        return self.activate(pre)

    def skip(self, x_c: Tensor) -> Tensor | float:
        """Optional linear skip term added to the reconstruction (transcoders); 0 here."""
        return 0.0

    def scale_target(self, target: Tensor) -> Tensor:
        """The training target in normalised units."""
        target = target.to(self.W_dec.dtype)
        return target * self.cfg.output_scale if self.cfg.output_scale != 1.0 else target

    def decoder_norms(self) -> Tensor:
        """``[d_sae]`` norm of each latent's decoder direction (summed over layers for crosscoders)."""
        return self.W_dec.norm(dim=-1)

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Remove the gradient component parallel to each unit-norm decoder row (Bricken et al.)."""
        if self.cfg.unit_norm_decoder and self.W_dec.grad is not None:
            w = self.W_dec.reshape(self.cfg.d_sae, -1)
            g = self.W_dec.grad.view(self.cfg.d_sae, -1)
            g.sub_((g * w).sum(-1, keepdim=True) * w)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Renormalise decoder rows to unit norm when the method wants it."""
        if self.cfg.unit_norm_decoder:
            w = self.W_dec.view(self.cfg.d_sae, -1)
            w.div_(w.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def init_b_dec(self, sample: Tensor) -> None:
        """Set ``b_dec`` from a sample of targets (raw units) by ``cfg.b_dec_init``."""
        if self.cfg.b_dec_init == "zeros":
            return
        data = self.scale_target(sample).reshape(-1, *self.b_dec.shape).float()
        flat = data.reshape(data.shape[0], -1)
        center = geometric_median(flat) if self.cfg.b_dec_init == "geometric_median" else flat.mean(0)
        self.b_dec.copy_(center.view_as(self.b_dec))

    def with_config(self, **changes: Any) -> Dictionary:
        """Replace config fields that do not change parameter shapes (e.g. ``input_scale``) in place."""
        self.cfg = dataclasses.replace(self.cfg, **changes)
        return self


def squared_error(recons: Tensor, target: Tensor) -> Tensor:
    """Squared error summed over all non-batch dims, averaged over the batch (0-dim)."""
    return (recons - target).pow(2).sum() / max(recons.shape[0], 1)


def geometric_median(points: Float[Tensor, "n d"], iters: int = 50, eps: float = 1e-6) -> Float[Tensor, " d"]:
    """Weiszfeld's algorithm: the point minimising the summed Euclidean distance to ``points``."""
    y = points.mean(0)
    for _ in range(iters):
        dist = (points - y).norm(dim=-1).clamp_min(eps)
        w = 1.0 / dist
        y_new = (w[:, None] * points).sum(0) / w.sum()
        if (y_new - y).norm() <= eps * max(float(y.norm()), 1.0):
            return y_new
        y = y_new
    return y
