"""What the web app asks of a model: next-token top-k and attention patterns of a prompt, steered generation.

Kept apart from the HTTP layer so it is testable on its own and reusable (``serve_llm`` steers the same way).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import ConfigError, TokenError


@torch.inference_mode()
def explore_prompt(model: Any, text: str, *, top_k: int = 5) -> dict[str, Any]:
    """Tokens, the top-k next tokens at every position, and attention patterns ``[layer][head][q][k]``."""
    if model.tokenizer is None:
        raise TokenError("this model has no tokenizer; the prompt explorer needs text")
    if not text:
        raise TokenError("the prompt is empty")
    tokens = model.tokenizer.to_tokens(text)
    if tokens.shape[1] > min(model.cfg.n_ctx, 256):
        raise TokenError(f"the prompt has {tokens.shape[1]} tokens; the explorer shows at most "
                         f"{min(model.cfg.n_ctx, 256)}")
    logits, cache = model.run_with_cache(tokens, names=lambda n: n.endswith("attn.hook_pattern"))
    probs = logits[0].float().softmax(-1)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    pieces = model.tokenizer.to_str_tokens(tokens[0])
    vocab = sorted(set(top.indices.flatten().tolist()))
    names = dict(zip(vocab, (model.tokenizer.to_str_tokens([i])[0] for i in vocab), strict=True))
    pattern = torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"][0] for layer in range(model.cfg.n_layers)])
    return {"tokens": pieces,
            "next": [[[names[i], round(p, 4)] for i, p in zip(ix, pv, strict=True)]
                     for ix, pv in zip(top.indices.tolist(), top.values.tolist(), strict=True)],
            "attention": pattern.float().round(decimals=3).tolist(),
            "n_layers": model.cfg.n_layers, "n_heads": model.cfg.attention.n_heads}


@dataclass(frozen=True)
class Steering:
    """One feature to steer by: ``add`` its write direction times ``value``, or ``clamp`` it to ``value``."""

    kind: str
    """``sae`` or ``neurons`` (the dictionaries table's kind)."""
    hook: str
    """The hook the feature is read at."""
    feature: int
    """Feature id."""
    mode: str
    """``add`` or ``clamp``."""
    value: float
    """Added multiple of the direction, or the clamped activation."""
    dictionary: Any = None
    """The loaded dictionary (``sae`` only)."""

    def __post_init__(self) -> None:
        if self.mode not in ("add", "clamp"):
            raise ConfigError(f"steering mode must be 'add' or 'clamp', got {self.mode!r}")
        if self.kind not in ("sae", "neurons"):
            raise ConfigError(f"steering supports SAE latents and neurons, not {self.kind!r} feature sets "
                              "(a CLT layer writes into several layers)")
        if self.kind == "sae" and self.dictionary is None:
            raise ConfigError("steering an SAE latent needs its dictionary (the harvest records its path)")


@contextlib.contextmanager
def steered(model: Any, s: Steering | None) -> Iterator[Any]:
    """Run the model with ``s`` applied inside the block (nothing when None); hooks removed on exit."""
    if s is None:
        yield model
        return
    if s.kind == "sae":
        from mechscope.dictionaries.splice import splice
        from mechscope.dictionaries.steering import clamp_latent, steer

        if s.mode == "add":
            with steer(model, s.dictionary, s.feature, s.value, hook=s.hook):
                yield model
        else:
            with splice(model, s.dictionary, hook=s.hook, use_error_term=True) as handle, \
                    clamp_latent(model, handle, s.feature, s.value):
                yield model
        return

    def edit(x: Tensor, hook: Any) -> Tensor:
        if not 0 <= s.feature < x.shape[-1]:
            raise ConfigError(f"neuron {s.feature} is outside [0, {x.shape[-1]})")
        x = x.clone()
        if s.mode == "add":
            x[..., s.feature] += s.value
        else:
            x[..., s.feature] = s.value
        return x

    with model.hooks(fwd=[(s.hook, edit)]):
        yield model


def generate_text(model: Any, prompt: str, steering: Steering | None, *, max_new_tokens: int = 24,
                  temperature: float = 0.0, seed: int = 0) -> str:
    """Greedy (or sampled) continuation of ``prompt`` with optional steering."""
    from mechscope.models.generate import generate

    with steered(model, steering):
        return generate(model, prompt, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed).texts[0]


__all__ = ["explore_prompt", "Steering", "steered", "generate_text"]
