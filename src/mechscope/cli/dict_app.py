"""The ``mechscope dict`` Typer group object, on its own so every module adding commands to it imports it.

``dictionaries`` (harvest/train/eval/...) and ``dict_scale`` (stream/scaling/splits/absorption) both
register their commands on this ``app``; ``dictionaries`` imports ``dict_scale`` so that loading the group
loads all of them, and neither imports the other back.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="Sparse dictionaries: harvest activations, train, evaluate.", no_args_is_help=True,
                  add_completion=False)
