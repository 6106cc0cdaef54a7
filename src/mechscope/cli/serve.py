"""Top-level ``mechscope serve`` (the feature web app) and ``mechscope serve-llm`` (OpenAI-compatible chat).

    mechscope serve --db features.db [--runs DIR] [--model smollm2-135m] [--host 127.0.0.1] [--port 8765]
    mechscope serve-llm smollm2-135m [--port 8000] [--dictionary DIR --feature 12 --value 8 --mode add]

Both bind 127.0.0.1 by default; another address needs ``--allow-remote``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mechscope.cli.common import fail_cleanly, load_model
from mechscope.errors import ConfigError


def serve(
    db: Path = typer.Option(..., "--db", help="Feature database (opened read-only)."),
    runs: list[Path] | None = typer.Option(None, "--runs", help="Run directory whose files may be browsed "
                                           "(repeatable)."),
    model: str | None = typer.Option(None, "--model", help="Model for the prompt explorer and steering "
                                     "(default: the database's model, loaded on first use)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8765, "--port", help="Port."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a non-loopback --host."),
    workers: int = typer.Option(1, "--workers", help="Server processes (each opens the database and loads the "
                                "model on first use)."),
) -> None:
    """Serve the feature browser, feature pages, prompt explorer and steering playground."""
    from mechscope.web.app import create_app
    from mechscope.web.server import check_host
    from mechscope.web.server import serve as run

    with fail_cleanly():
        check_host(host, allow_remote)

        def loader(name: str) -> Any:
            return load_model(model or name)

        if not 1 <= workers <= 64:
            raise ConfigError(f"--workers must be in [1, 64], got {workers}")
        app: Any = create_app(db, model_loader=loader, runs=list(runs or []))  # checks the database and runs
        if workers > 1:
            import json
            import os

            from mechscope.web.app import ENV

            os.environ[ENV] = json.dumps({"db": str(db), "runs": [str(r) for r in runs or []], "model": model})
            app = "mechscope.web.app:app_from_env"
    typer.echo(f"mechscope serve: http://{host}:{port}/ ({workers} worker{'s' * (workers > 1)})", err=True)
    run(app, host, port, workers=workers)


def serve_llm(
    model: str = typer.Argument(..., help="Model name or path for mechscope.load."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8000, "--port", help="Port."),
    dictionary: Path | None = typer.Option(None, "--dictionary", help="Steer with a latent of this dictionary."),
    neurons: str | None = typer.Option(None, "--neurons", help="Steer with a neuron of this hook instead."),
    feature: int | None = typer.Option(None, "--feature", help="Latent / neuron id to steer with."),
    mode: str = typer.Option("add", "--mode", help="add | clamp."),
    value: float = typer.Option(8.0, "--value", help="Added multiple of the direction, or the clamped value."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a non-loopback --host."),
) -> None:
    """Serve a mechscope model through the OpenAI chat-completions protocol (optionally steered)."""
    from mechscope.errors import ConfigError
    from mechscope.web.llm_server import create_llm_app
    from mechscope.web.model_ops import Steering
    from mechscope.web.server import check_host
    from mechscope.web.server import serve as run

    with fail_cleanly():
        check_host(host, allow_remote)
        steering: Any = None
        if dictionary is not None or neurons is not None:
            if feature is None:
                raise ConfigError("steering needs --feature")
            if dictionary is not None:
                from mechscope.dictionaries.io import load

                d = load(dictionary)
                steering = Steering(kind="sae", hook=str(d.cfg.hook_name), feature=feature, mode=mode, value=value,
                                    dictionary=d)
            else:
                steering = Steering(kind="neurons", hook=str(neurons), feature=feature, mode=mode, value=value)
        app = create_llm_app(load_model(model), model_name=Path(model).name, steering=steering)
    typer.echo(f"mechscope serve-llm: http://{host}:{port}/v1/chat/completions", err=True)
    run(app, host, port)


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``serve-llm`` as top-level commands."""
    app.command("serve")(serve)
    app.command("serve-llm")(serve_llm)
