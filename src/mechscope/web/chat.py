"""Chat formatting and local chat completion with a mechscope model (shared by ``serve-llm`` and autointerp).

SmolLM2-Instruct speaks ChatML (``<|im_start|>role\\ncontent<|im_end|>``); a model whose tokenizer has no
``<|im_start|>`` token (toy vocabularies) gets the messages' contents joined by spaces instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mechscope.errors import ConfigError, TokenError

Message = dict[str, str]


def has_chatml(tokenizer: Any) -> bool:
    """Whether the tokenizer has ChatML's special tokens."""
    try:
        tokenizer.to_single_token("<|im_start|>")
        tokenizer.to_single_token("<|im_end|>")
    except TokenError:
        return False
    return True


def format_chat(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The prompt text for ``messages`` (ChatML with an open assistant turn, or plain contents)."""
    if not messages:
        raise ConfigError("messages must not be empty")
    for m in messages:
        if m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise ConfigError(f"each message needs role system|user|assistant and a string content, got {m!r}")
    if has_chatml(tokenizer):
        turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return turns + "<|im_start|>assistant\n"
    return " ".join(m["content"] for m in messages)


def complete(model: Any, messages: Sequence[Message], *, max_tokens: int = 64, temperature: float = 0.0,
             seed: int | None = None, stop: Sequence[str] = (), steering: Any = None) -> tuple[str, int, int, str]:
    """Generate the assistant's reply: ``(text, prompt_tokens, completion_tokens, finish_reason)``."""
    from mechscope.models.generate import generate
    from mechscope.web.model_ops import steered

    prompt = format_chat(model.tokenizer, messages)
    n_prompt = len(model.tokenizer.encode(prompt))
    budget = max(0, min(max_tokens, model.cfg.n_ctx - n_prompt))
    if budget == 0:
        raise TokenError(f"the conversation has {n_prompt} tokens, no room left in n_ctx={model.cfg.n_ctx}")
    with steered(model, steering):
        out = generate(model, prompt, max_new_tokens=budget, temperature=temperature, seed=seed)
    text = out.texts[0].replace("<|im_end|>", "")
    n_new = int(out.tokens.shape[1]) - n_prompt
    finish = "length" if n_new >= budget else "stop"
    for s in stop:
        if s and s in text:
            text, finish = text[: text.index(s)], "stop"
    return text, n_prompt, n_new, finish


__all__ = ["format_chat", "complete", "has_chatml", "Message"]
