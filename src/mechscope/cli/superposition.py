"""``mechscope superposition``: the toy-models-of-superposition case study from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Toy models of superposition (Elhage et al. 2022) and computation in superposition.",
                  no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Toy models of superposition (Elhage et al. 2022) and computation in superposition."""


@app.command()
def run(out: Path = typer.Option(..., "--out", help="Directory for the pictures and summary.json."),
        as_json: bool = typer.Option(False, "--json", help="Print only the JSON summary."),
        quick: bool = typer.Option(False, "--quick", help="Tour-sized sweeps (seconds instead of minutes)."),
        seed: int = typer.Option(0, help="Base seed of every sweep."),
        threads: int = typer.Option(0, min=0, help="torch threads (0: leave torch's default).")) -> None:
    """Train every reproduction, write pictures to OUT and print the summary figures as one JSON object."""
    import torch

    from mechscope.experiments.superposition.config import SuperpositionExperimentConfig
    from mechscope.experiments.superposition.report import save_figures
    from mechscope.experiments.superposition.run import run as run_experiment

    if threads > 0:
        torch.set_num_threads(threads)
    cfg = SuperpositionExperimentConfig.quick(seed) if quick else SuperpositionExperimentConfig(seed=seed)
    res = run_experiment(cfg)
    save_figures(res, cfg, out)
    summary = res.summary()
    summary["config"] = "quick" if quick else "full"
    out.mkdir(parents=True, exist_ok=True)
    from mechscope.io_safety import atomic_write_json

    atomic_write_json(out / "summary.json", summary)
    if as_json:
        print(json.dumps(summary))
        return
    print(json.dumps(summary, indent=1))
    print(f"pictures and summary.json written to {out}")
