"""Running an ASGI app with uvicorn: in the foreground (the CLI) or in a background thread (tests, benchmarks)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from mechscope.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback address unless the user explicitly allowed it."""
    if host not in LOOPBACK and not allow_remote:
        raise ConfigError(f"--host {host} would expose the server beyond this machine; it binds 127.0.0.1 by "
                          "default. Pass --allow-remote to bind another address on purpose.")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve(app: Any, host: str = "127.0.0.1", port: int = 8765, *, log_level: str = "info", workers: int = 1) -> None:
    """Serve ``app`` until interrupted; with ``workers > 1``, ``app`` must be an import string of a factory."""
    import uvicorn

    if workers > 1:
        uvicorn.run(app, host=host, port=port, log_level=log_level, workers=workers, factory=True)
    else:
        uvicorn.run(app, host=host, port=port, log_level=log_level)


@contextlib.contextmanager
def serving(app: Any, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Serve ``app`` in a background thread for a ``with`` block; yields its base URL, stops it on exit."""
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


__all__ = ["serve", "serving", "free_port", "check_host"]
