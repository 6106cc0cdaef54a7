"""Chat clients an explainer / scorer talks to: the embedded model through mechscope generation, or any
OpenAI-compatible chat-completions endpoint over HTTP (httpx).

A client is anything with ``name`` and ``chat(messages, max_tokens) -> str`` (tests script one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from mechscope.errors import ExplainerError

Message = dict[str, str]


@runtime_checkable
class ChatClient(Protocol):
    """Something that answers a chat."""

    name: str

    def chat(self, messages: Sequence[Message], max_tokens: int = 64) -> str:
        """The assistant's reply to ``messages``."""
        ...


class LocalChat:
    """A mechscope model answering through ``web.chat.complete`` (greedy)."""

    def __init__(self, model: Any, name: str = "smollm2-135m") -> None:
        self.model, self.name = model, f"local:{name}"

    def chat(self, messages: Sequence[Message], max_tokens: int = 64) -> str:
        """Generate the reply locally."""
        from mechscope.web.chat import complete

        return complete(self.model, messages, max_tokens=max_tokens)[0]


class HTTPChat:
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint (``url`` is the base, e.g. ``http://127.0.0.1:8000``)."""

    def __init__(self, url: str, model: str = "default", *, api_key: str | None = None, timeout: float = 120.0) -> None:
        import httpx

        base = url.rstrip("/")
        self.endpoint = base if base.endswith("/chat/completions") else (
            f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions")
        self.model, self.name = model, f"http:{model}@{base}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)

    def chat(self, messages: Sequence[Message], max_tokens: int = 64) -> str:
        """POST the chat; raises ``ExplainerError`` naming the URL when it cannot be reached or answers badly."""
        import httpx

        try:
            r = self._client.post(self.endpoint, json={"model": self.model, "messages": list(messages),
                                                       "max_tokens": max_tokens, "temperature": 0})
        except httpx.HTTPError as e:
            raise ExplainerError(f"cannot reach the explainer at {self.endpoint}: {e.__class__.__name__}: {e}. "
                                 "Is the server running (e.g. `mechscope serve-llm smollm2-135m`)?") from e
        if r.status_code != 200:
            raise ExplainerError(f"the explainer at {self.endpoint} answered HTTP {r.status_code}: {r.text[:300]}")
        try:
            return str(r.json()["choices"][0]["message"]["content"])
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise ExplainerError(f"the explainer at {self.endpoint} did not answer a chat completion: "
                                 f"{r.text[:300]}") from e

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


__all__ = ["ChatClient", "LocalChat", "HTTPChat", "Message"]
