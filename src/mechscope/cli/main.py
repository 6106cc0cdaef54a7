"""``mechscope``: the command-line entry point.

Sub-command groups live in their own modules (``cli/<group>.py`` exposing a Typer ``app``); each keeps
heavy imports inside its commands so ``mechscope --help`` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util

import typer

from mechscope.cli.common import CleanGroup

app = typer.Typer(help="mechscope: mechanistic interpretability on a CPU.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False, cls=CleanGroup)

# (group name, module) — modules expose `app` (a Typer group) or `register(app)` for top-level commands
_GROUPS: list[tuple[str, str]] = [
    ("", "mechscope.cli.core"),
    ("", "mechscope.cli.heads"),
    ("superposition", "mechscope.cli.superposition"),
    ("grokking", "mechscope.cli.grokking"),
    ("induction", "mechscope.cli.induction"),
    ("patch", "mechscope.cli.patch"),
    ("dict", "mechscope.cli.dictionaries"),
    ("features", "mechscope.cli.features"),
    ("", "mechscope.cli.serve"),
    ("attribute", "mechscope.cli.attribute"),
    ("circuit", "mechscope.cli.circuit"),
    ("probe", "mechscope.cli.probe"),
    ("scrub", "mechscope.cli.scrub"),
]


def _register() -> None:
    for group, modname in _GROUPS:
        if importlib.util.find_spec(modname) is None:
            continue  # a group whose module has not been written yet
        mod = importlib.import_module(modname)
        if hasattr(mod, "register"):
            mod.register(app)
        else:
            app.add_typer(mod.app, name=group)


_register()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
