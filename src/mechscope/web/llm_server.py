"""``create_llm_app``: a mechscope model behind the OpenAI chat-completions protocol (``mechscope serve-llm``).

``POST /v1/chat/completions`` takes ``model``, ``messages``, ``max_tokens`` (or ``max_completion_tokens``),
``temperature`` (default 0: greedy), ``seed``, ``stop``; answers ``chat.completion`` objects with ``usage``.
``GET /v1/models`` lists the one model. Streaming is not offered (``stream: true`` is refused with 400).
With ``steering`` every generation runs with that feature added / clamped (``web.model_ops.steered``).
"""

import threading
import time
import uuid
from typing import Any

from mechscope.errors import MechscopeError


def create_llm_app(model: Any, *, model_name: str = "mechscope", steering: Any = None) -> Any:
    """The FastAPI app serving ``model``."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from mechscope.web.chat import complete

    app = FastAPI(title="mechscope serve-llm", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()  # one generation at a time: hooks are shared model state

    def error(message: str, status: int = 400) -> Any:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "mechscope"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            return error("the request body must be JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return error("the request needs a 'messages' list")
        if body.get("stream"):
            return error("streaming is not supported by mechscope serve-llm; send stream: false")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 64
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        try:
            import anyio

            def run() -> tuple[str, int, int, str]:
                with lock:
                    return complete(model, body["messages"], max_tokens=int(max_tokens),
                                    temperature=float(body.get("temperature") or 0.0), seed=body.get("seed"),
                                    stop=stop, steering=steering)

            text, n_prompt, n_new, finish = await anyio.to_thread.run_sync(run)
        except (MechscopeError, TypeError, ValueError) as e:
            return error(str(e))
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model") or model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_new, "total_tokens": n_prompt + n_new}}

    return app


__all__ = ["create_llm_app"]
