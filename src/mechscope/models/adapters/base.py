"""The adapter contract: a config translation plus declarative weight and activation maps.

A ``WeightRule`` says which of our parameters come from which source tensor and how (a conversion
function of the tensor and config: transpose, split per head, un-interleave a fused QKV...). An
``ActivationRule`` says where in the transformers module tree the activation behind one of our hook
names can be observed (input or output of a module, and how to reshape it); ``mechscope verify`` uses
these to compare every shared activation, not just the logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor

from mechscope.errors import ModelFileError
from mechscope.models.config import ModelConfig

Convert = Callable[[Tensor, ModelConfig], "Tensor | tuple[Tensor, ...]"]


@dataclass(frozen=True)
class WeightRule:
    """``ours`` (names with ``{L}`` for the layer) ← ``fn(state[theirs], cfg)``; ``optional`` rules may be absent."""

    ours: tuple[str, ...]
    theirs: str
    fn: Convert
    optional: bool = False


@dataclass(frozen=True)
class ActivationRule:
    """Our hook ``ours`` equals the ``where`` ("in"/"out") tensor of source module ``module``, reshaped by ``view``."""

    ours: str
    module: str
    where: Literal["in", "out"]
    view: Literal["flat", "heads", "kv_heads"] = "flat"


@dataclass(frozen=True)
class Adapter:
    """A family: how to build our config and weights from a transformers config and state dict."""

    family: str
    config_from_hf: Callable[[dict[str, Any]], ModelConfig]
    global_rules: tuple[WeightRule, ...]
    layer_rules: tuple[WeightRule, ...]
    activation_rules: tuple[ActivationRule, ...] = field(default=())

    def convert(self, hf_state: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
        """Our state dict from a transformers state dict (names checked; missing tensors named)."""
        out: dict[str, Tensor] = {}
        rules = list(self.global_rules) + [
            WeightRule(tuple(o.replace("{L}", str(layer)) for o in r.ours), r.theirs.replace("{L}", str(layer)),
                       r.fn, r.optional)
            for layer in range(cfg.n_layers) for r in self.layer_rules]
        for r in rules:
            if r.theirs not in hf_state:
                if r.optional:
                    continue
                raise ModelFileError(f"{self.family} weights lack {r.theirs!r} (needed for {r.ours})")
            val = r.fn(hf_state[r.theirs], cfg)
            vals = val if isinstance(val, tuple) else (val,)
            for name, v in zip(r.ours, vals):
                out[name] = v.detach().float().contiguous()
        return out


# -- conversion helpers shared by families --------------------------------------------------------
def ident(t: Tensor, cfg: ModelConfig) -> Tensor:
    """Unchanged."""
    return t


def transpose(t: Tensor, cfg: ModelConfig) -> Tensor:
    """nn.Linear weight [out in] -> our [in out]."""
    return t.T


def linear_to_heads(n: Callable[[ModelConfig], int]) -> Convert:
    """nn.Linear weight [heads*d_head d_model] -> [heads d_model d_head]."""

    def f(t: Tensor, cfg: ModelConfig) -> Tensor:
        return t.view(n(cfg), cfg.d_head, cfg.d_model).transpose(1, 2)

    return f


def bias_to_heads(n: Callable[[ModelConfig], int]) -> Convert:
    """bias [heads*d_head] -> [heads d_head]."""

    def f(t: Tensor, cfg: ModelConfig) -> Tensor:
        return t.view(n(cfg), cfg.d_head)

    return f


def out_proj_to_heads(t: Tensor, cfg: ModelConfig) -> Tensor:
    """nn.Linear output projection weight [d_model heads*d_head] -> W_O [heads d_head d_model]."""
    return t.T.reshape(cfg.n_heads, cfg.d_head, cfg.d_model)


def q_heads(cfg: ModelConfig) -> int:
    """Query heads."""
    return cfg.n_heads


def kv_heads(cfg: ModelConfig) -> int:
    """Key/value heads."""
    return cfg.attention.kv_heads
