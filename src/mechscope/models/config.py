"""``ModelConfig``: the shape of a transformer, composed of attention / MLP / norm / positional configs.

Variants are values of these configs, never ``if arch == ...`` branches in components (architecture
identity lives only in ``models/adapters``). Saved as JSON next to ``model.safetensors`` with a format
version. Every config checks the types of its fields (``mechscope.validation``) and ``from_dict`` refuses
unknown keys at every level: a misspelt ``n_head_kv`` is an error naming ``n_kv_heads``, never a silently
different model (a file from a newer mechscope says so through its ``format_version``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from mechscope.errors import ConfigError
from mechscope.validation import build, check_types

FORMAT_VERSION = 1

ADDED_DEFAULTS: dict[str, dict[str, Any]] = {
    "": {"embed_scale": 1.0},
    "attention": {"qk_norm": False, "sliding_window": None, "global_every": None},
    "norm": {"post_sublayer": False},
    "positional": {"local_rotary_base": None},
}
"""Fields added after format 1 (Gemma 3 / Qwen 3 support), per sub-config ("" = top level), with their
defaults: ``to_dict`` leaves them out at these values, so a config that uses none of them serialises exactly
as before (saved models, run identities and resume checks of older runs stay equal); ``from_dict`` fills them."""

Activation = Literal["gelu", "gelu_new", "relu", "silu", "gelu_fast"]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class AttentionConfig:
    """Multi-head (optionally grouped-query) causal self-attention."""

    n_heads: int
    """Number of query heads."""
    d_head: int
    """Dimension of each head."""
    n_kv_heads: int | None = None
    """Key/value heads for grouped-query attention; None means ``n_heads`` (plain multi-head)."""
    qkv_bias: bool = False
    """Whether Q, K, V projections have biases (GPT-2, NeoX, Qwen2)."""
    out_bias: bool = False
    """Whether the output projection has a bias (GPT-2, NeoX)."""
    scale: float | None = None
    """Score scale; None means 1/sqrt(d_head)."""
    qk_norm: bool = False
    """RMSNorm each query and key head over ``d_head`` (one weight per Q/K, shared by the heads) before the
    rotary positions (Qwen3, Gemma 3); eps from ``norm.eps``."""
    sliding_window: int | None = None
    """Local attention: a query sees only the ``sliding_window`` latest keys (itself included) in the layers
    ``is_local`` selects; None = every layer attends to the whole context."""
    global_every: int | None = None
    """With ``sliding_window``: every ``global_every``-th layer (layers ``global_every-1``, ``2*global_every-1``,
    ...) attends globally, the others locally (Gemma 3: 6, Gemma 2: 2); None = every layer is local."""

    def __post_init__(self) -> None:
        check_types(self, "attention.")
        _check(self.n_heads > 0, f"attention.n_heads must be > 0, got {self.n_heads}")
        _check(self.d_head > 0, f"attention.d_head must be > 0, got {self.d_head}")
        kv = self.kv_heads
        _check(kv > 0 and self.n_heads % kv == 0,
               f"attention.n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}")
        _check(self.scale is None or self.scale > 0, f"attention.scale must be > 0 or None, got {self.scale}")
        _check(self.sliding_window is None or self.sliding_window > 0,
               f"attention.sliding_window must be a positive int or None, got {self.sliding_window}")
        _check(self.global_every is None or (self.global_every > 0 and self.sliding_window is not None),
               f"attention.global_every must be a positive int used with sliding_window, got {self.global_every} "
               f"(sliding_window={self.sliding_window})")

    def is_local(self, layer: int) -> bool:
        """Whether ``layer`` uses the sliding window (see ``sliding_window`` and ``global_every``)."""
        if self.sliding_window is None:
            return False
        return self.global_every is None or (layer + 1) % self.global_every != 0

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (``n_kv_heads`` or ``n_heads``)."""
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def attn_scale(self) -> float:
        """The factor multiplying q·k."""
        return self.scale if self.scale is not None else self.d_head ** -0.5


@dataclass(frozen=True, kw_only=True)
class MLPConfig:
    """The feed-forward sublayer: ``standard`` act(x W_in + b_in) W_out, or ``gated`` (SwiGLU-style)."""

    kind: Literal["standard", "gated"] = "standard"
    """``gated`` computes act(x W_gate) * (x W_in) before W_out."""
    d_mlp: int
    """Hidden width."""
    act: Activation = "gelu"
    """Activation function."""
    bias: bool = False
    """Whether W_in / W_out have biases."""

    def __post_init__(self) -> None:
        check_types(self, "mlp.")
        _check(self.d_mlp > 0, f"mlp.d_mlp must be > 0, got {self.d_mlp}")
        _check(self.kind in ("standard", "gated"), f"mlp.kind must be 'standard' or 'gated', got {self.kind!r}")
        _check(self.act in ("gelu", "gelu_new", "relu", "silu", "gelu_fast"),
               f"mlp.act must be one of gelu, gelu_new, gelu_fast, relu, silu; got {self.act!r}")


@dataclass(frozen=True, kw_only=True)
class NormConfig:
    """Normalisation used before attention, before the MLP and before the unembedding."""

    kind: Literal["layernorm", "rmsnorm", "none"] = "layernorm"
    """``none`` gives toy models without normalisation."""
    eps: float = 1e-5
    """Added to the variance (or mean square) before the square root."""
    bias: bool = True
    """LayerNorm bias (ignored by rmsnorm)."""
    post_sublayer: bool = False
    """Also normalise each sublayer's output before it joins the residual stream (``ln1_post`` after
    attention, ``ln2_post`` after the MLP: Gemma 2/3's "sandwich" norms)."""

    def __post_init__(self) -> None:
        check_types(self, "norm.")
        _check(self.kind in ("layernorm", "rmsnorm", "none"),
               f"norm.kind must be 'layernorm', 'rmsnorm' or 'none', got {self.kind!r}")
        _check(self.eps > 0, f"norm.eps must be > 0, got {self.eps}")


@dataclass(frozen=True, kw_only=True)
class PositionalConfig:
    """How positions enter: learned absolute embeddings, rotary (RoPE), shortformer, or nothing."""

    kind: Literal["learned", "rotary", "shortformer", "none"] = "learned"
    """Positional scheme. ``shortformer`` (Press et al. 2021; TransformerLens's name): learned absolute
    embeddings added to every attention layer's query and key inputs (after the norm) but never to the
    residual stream or the values, so positions steer attention without taking residual space."""
    rotary_dim: int | None = None
    """Dimensions of each head that rotate (NeoX rotates a fraction); None means all of d_head."""
    rotary_base: float = 10000.0
    """RoPE theta."""
    local_rotary_base: float | None = None
    """RoPE theta of the sliding-window layers (``attention.is_local``; Gemma 3: 10 000 locally, 1 000 000
    globally); None = ``rotary_base`` everywhere."""

    def __post_init__(self) -> None:
        check_types(self, "positional.")
        _check(self.kind in ("learned", "rotary", "shortformer", "none"),
               f"positional.kind must be 'learned', 'rotary', 'shortformer' or 'none', got {self.kind!r}")
        _check(self.rotary_dim is None or (self.rotary_dim > 0 and self.rotary_dim % 2 == 0),
               f"positional.rotary_dim must be a positive even number or None, got {self.rotary_dim}")
        _check(math.isfinite(self.rotary_base) and self.rotary_base > 1,
               f"positional.rotary_base (RoPE theta) must be a finite number > 1, got {self.rotary_base}")
        _check(self.local_rotary_base is None or (math.isfinite(self.local_rotary_base) and self.local_rotary_base > 1),
               f"positional.local_rotary_base must be a finite number > 1 or None, got {self.local_rotary_base}")

    def base_of(self, local: bool) -> float:
        """RoPE theta of a local (sliding-window) or global layer."""
        return self.local_rotary_base if local and self.local_rotary_base is not None else self.rotary_base


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """A decoder-only transformer's shape. Build one per family in ``models/adapters`` or by hand.

    Example:
        >>> cfg = ModelConfig(d_model=16, n_layers=1, d_vocab=10, n_ctx=8,
        ...                   attention=AttentionConfig(n_heads=2, d_head=8), mlp=None)
        >>> cfg.attention.kv_heads
        2
    """

    d_model: int
    """Residual stream width."""
    n_layers: int
    """Number of blocks."""
    d_vocab: int
    """Vocabulary size (embedding rows)."""
    n_ctx: int
    """Maximum sequence length."""
    attention: AttentionConfig
    """Attention sublayer."""
    mlp: MLPConfig | None = None
    """MLP sublayer; None gives an attention-only model."""
    norm: NormConfig = field(default_factory=NormConfig)
    """Normalisation (layernorm / rmsnorm / none)."""
    positional: PositionalConfig = field(default_factory=PositionalConfig)
    """Positional scheme."""
    parallel_attn_mlp: bool = False
    """NeoX-style block: resid_post = resid_pre + attn(ln1(x)) + mlp(ln2(x))."""
    unembed_bias: bool = False
    """Whether the unembedding has a bias b_U."""
    embed_scale: float = 1.0
    """Factor multiplying the token embeddings before the first block (Gemma: sqrt(d_model)); ``W_E`` keeps
    the file's values and ``hook_embed`` sees the scaled embedding."""
    d_vocab_out: int | None = None
    """Output vocabulary if it differs from d_vocab (toy tasks); None means d_vocab."""
    name: str = "custom"
    """A label used in reports and saved files."""
    architecture: str = "custom"
    """Source family (gpt2, neox, llama, qwen2, mistral, toy, custom): informational, never branched on."""

    def __post_init__(self) -> None:
        check_types(self)
        for f in ("d_model", "n_layers", "d_vocab", "n_ctx"):
            v = getattr(self, f)
            _check(v > 0, f"{f} must be a positive int, got {v!r}")
        _check(math.isfinite(self.embed_scale) and self.embed_scale > 0,
               f"embed_scale must be a finite number > 0, got {self.embed_scale!r}")
        _check(self.d_vocab_out is None or self.d_vocab_out > 0,
               f"d_vocab_out must be a positive int or None (= d_vocab), got {self.d_vocab_out!r}")
        if self.parallel_attn_mlp:
            _check(self.mlp is not None, "parallel_attn_mlp=True needs an MLP (mlp is None)")
        if self.positional.kind == "rotary":
            rd = self.positional.rotary_dim
            _check(rd is None or rd <= self.attention.d_head,
                   f"positional.rotary_dim={rd} must be <= attention.d_head={self.attention.d_head}")

    @property
    def n_heads(self) -> int:
        """Query heads per layer."""
        return self.attention.n_heads

    @property
    def d_head(self) -> int:
        """Per-head dimension."""
        return self.attention.d_head

    @property
    def d_mlp(self) -> int | None:
        """MLP width or None for attention-only models."""
        return self.mlp.d_mlp if self.mlp is not None else None

    @property
    def vocab_out(self) -> int:
        """Output vocabulary size."""
        return self.d_vocab_out if self.d_vocab_out is not None else self.d_vocab

    def dim_sizes(self, batch: int, pos: int) -> dict[str, int]:
        """Axis sizes used to resolve registered hook shapes."""
        return {"batch": batch, "pos": pos, "query_pos": pos, "key_pos": pos, "d_model": self.d_model,
                "n_heads": self.n_heads, "n_kv_heads": self.attention.kv_heads, "d_head": self.d_head,
                "d_mlp": self.d_mlp or 0, "d_vocab": self.vocab_out}

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # -- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with ``format_version``."""
        d = dataclasses.asdict(self)
        for section, defaults in ADDED_DEFAULTS.items():
            sub = d if not section else d[section]
            for key, default in defaults.items():
                if sub.get(key, default) == default:
                    sub.pop(key, None)
        d["format_version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys (at any level), missing fields and wrong types raise ``ConfigError``."""
        if not isinstance(d, dict):
            raise ConfigError(f"a model config must be a JSON object (dict), got {type(d).__name__}")
        version = d.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigError(f"config format_version must be a positive int, got {version!r}")
        if version > FORMAT_VERSION:
            raise ConfigError(f"config format_version {version} is newer than this mechscope ({FORMAT_VERSION}); "
                              "upgrade mechscope to read it")
        return build(cls, d, ignore=("format_version",))

    def to_json(self) -> str:
        """Pretty JSON text."""
        return json.dumps(self.to_dict(), indent=2)
