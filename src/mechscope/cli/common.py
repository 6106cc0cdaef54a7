"""CLI helpers: loading a model by name or path, and turning user errors into one clean line (exit 2).

``CleanGroup`` is the ``mechscope`` app's click group: any ``MechscopeError``, file-system error on a
user-given path, or click usage error raised by any sub-command becomes ``error: <message>`` on stderr
and exit status 2, never a traceback. Numbers are validated by the options themselves (``min=1``) or by
``unit_interval`` (``--top-p``) before anything loads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import typer
from typer.core import TyperGroup

# click's UsageError as typer raises it (recent typer vendors its own click; older typer re-exports click's)
UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class CleanGroup(TyperGroup):
    """A Typer group that reports user errors of every sub-command as one line and exit status 2.

    Its contexts are ``typer.Context`` instances, so a group callback annotated ``ctx: typer.Context``
    receives exactly that type (the runtime type checker of the test suite holds it to it)."""

    context_class = typer.Context

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as e:  # options of the group itself (``mechscope --bogus``)
            where = getattr(e, "ctx", None)
            hint = f" (see `{where.command_path} --help`)" if where is not None else ""
            typer.echo(f"error: {' '.join(e.format_message().split())}{hint}", err=True)  # type: ignore[attr-defined]
            raise typer.Exit(2) from None

    def invoke(self, ctx: Any) -> Any:
        from mechscope.errors import MechscopeError

        try:
            return super().invoke(ctx)
        except MechscopeError as e:
            message = str(e)
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as e:
            message = f"{e.strerror or type(e).__name__}: {e.filename}" if e.filename else str(e)
        except UsageError as e:
            sub = getattr(e, "ctx", None)
            where = (sub or ctx).command_path
            message = f"{e.format_message()} (see `{where} --help`)"  # type: ignore[attr-defined]
        typer.echo(f"error: {' '.join(message.split())}", err=True)
        raise typer.Exit(2)


def unit_interval(name: str) -> Callable[[Any], Any]:
    """Option callback: the value (when given) must be in (0, 1]."""

    def check(value: Any) -> Any:
        if value is not None and not 0 < value <= 1:
            raise typer.BadParameter(f"{name} must be in (0, 1], got {value}")
        return value

    return check


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
