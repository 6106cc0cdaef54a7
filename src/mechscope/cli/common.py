"""CLI helpers: loading a model by name or path, and turning mechscope errors into clean messages."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import typer


@contextlib.contextmanager
def fail_cleanly() -> Iterator[None]:
    """Print a mechscope error as one clear line and exit 2, instead of a traceback."""
    from mechscope.errors import MechscopeError

    try:
        yield
    except MechscopeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def load_model(name: str) -> Any:
    """``mechscope.load`` with a progress message on stderr."""
    import torch

    from mechscope.models.loading import load

    typer.echo(f"loading {name} ...", err=True)
    with torch.no_grad():
        return load(name).eval()
