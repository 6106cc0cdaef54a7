"""Text generation with a KV cache, padding-correct batches, and hooks active at every step.

Prompts of different lengths are left-padded; positions count real tokens only, so each row generates
exactly what it would alone. Hooks attached with ``model.hooks(...)`` around ``generate`` fire on every
forward (the prompt pass and each new token), which is what steering needs; note that with the KV cache
a hook at step t sees only the new position ([batch 1 ...]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from mechscope.errors import ConfigError, TokenError
from mechscope.models.components.attention import KVCache
from mechscope.models.transformer import HookedTransformer


class GenerateOutput(NamedTuple):
    """Result of ``generate``."""

    tokens: Tensor
    """[batch prompt_pos + new] ids, left-padded prompts followed by generated ids."""
    attention_mask: Tensor
    """[batch prompt_pos + new] 1 for real tokens (prompt and generated), 0 for padding."""
    texts: list[str]
    """The generated continuations only, decoded (empty strings if the model has no tokenizer)."""


def _prepare(model: HookedTransformer, prompts: str | Sequence[str] | Tensor,
             prepend_bos: bool | None) -> tuple[Tensor, Tensor]:
    if isinstance(prompts, Tensor):
        toks = prompts if prompts.dim() == 2 else prompts.unsqueeze(0)
        return toks.long(), torch.ones_like(toks, dtype=torch.long)
    if model.tokenizer is None:
        raise TokenError("this model has no tokenizer: pass token ids instead of text")
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    batch = model.tokenizer.encode_batch(texts, prepend_bos=prepend_bos, padding_side="left")
    return batch.tokens, batch.attention_mask.long()


def _sample(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None,
            gen: torch.Generator | None) -> Tensor:
    if temperature == 0.0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, idx = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


@torch.no_grad()
def generate(model: HookedTransformer, prompts: str | Sequence[str] | Tensor, *, max_new_tokens: int = 20,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, stop_at_eos: bool = True, use_kv_cache: bool = True,
             prepend_bos: bool | None = None) -> GenerateOutput:
    """Generate continuations: greedy when ``temperature == 0``, else sampled (optionally top-k / top-p).

    Example:
        >>> out = generate(model, ["The capital of France is"], max_new_tokens=5)  # doctest: +SKIP
        >>> out.texts[0]  # doctest: +SKIP
        ' Paris.\\n\\nThe'
    """
    if not (math.isfinite(temperature) and temperature >= 0) or max_new_tokens < 0:
        raise ConfigError(f"temperature must be >= 0 and max_new_tokens >= 0 (got {temperature}, {max_new_tokens})")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1 (keep the k most likely tokens) or None, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1] (nucleus probability mass) or None, got {top_p}")
    tokens, mask = _prepare(model, prompts, prepend_bos)
    if tokens.shape[1] + max_new_tokens > model.cfg.n_ctx:
        raise TokenError(f"prompt ({tokens.shape[1]}) + max_new_tokens ({max_new_tokens}) exceeds n_ctx={model.cfg.n_ctx}")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    eos = getattr(model.tokenizer, "eos_token_id", None) if stop_at_eos else None
    done = torch.zeros(tokens.shape[0], dtype=torch.bool)
    cache = KVCache(model.cfg.n_layers) if use_kv_cache else None
    step_in, step_mask = tokens, mask
    new_ids: list[Tensor] = []
    for _ in range(max_new_tokens):
        if cache is not None:
            logits = model(step_in, attention_mask=step_mask, past_kv=cache)
        else:
            logits = model(tokens, attention_mask=mask)
        nxt = _sample(logits[:, -1].float(), temperature, top_k, top_p, gen)
        if eos is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        new_ids.append(nxt)
        keep = (~done).long()[:, None]
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        mask = torch.cat([mask, keep], dim=1)
        step_in, step_mask = nxt[:, None], keep
        if eos is not None:
            done |= nxt == eos
            if bool(done.all()):
                break
    texts = _decode(model, new_ids, eos)
    return GenerateOutput(tokens=tokens, attention_mask=mask, texts=texts)


def _decode(model: HookedTransformer, new_ids: list[Tensor], eos: int | None) -> list[str]:
    if model.tokenizer is None or not new_ids:
        return [""] * (new_ids[0].shape[0] if new_ids else 0)
    out = torch.stack(new_ids, dim=1)
    texts = []
    for row in out.tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        texts.append(model.tokenizer.to_string(torch.tensor(row)))
    return texts
