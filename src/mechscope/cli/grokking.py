"""``mechscope grokking``: train a modular-addition transformer until it groks, then analyse it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import typer

app = typer.Typer(help="Grokking of modular addition (Nanda et al. 2023): train and reverse-engineer.",
                  no_args_is_help=True)


@app.command("train")
def train_cmd(
    out: Path = typer.Option(..., "--out", help="Run directory (metrics.jsonl, checkpoints/)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, the initialisation and the trainer."),
    p: int | None = typer.Option(None, "--p", help="Modulus (default: the preset's, 113)."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Full-batch epochs (default: the preset's)."),
    preset: str = typer.Option("fast", "--preset", help="'fast' (groks in minutes), 'quick' (p=31, under a minute; the tour's) "
                                "or 'paper' (lr 1e-3, wd 1, 40k epochs)."),
    train_frac: float | None = typer.Option(None, "--train-frac", help="Fraction of pairs for training."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint "
                                "(with its stored settings; only --epochs may change)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete --out first if it holds a run."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch threads (default: torch's choice)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
) -> None:
    """Train (full-batch AdamW) and write checkpoints; prints the final metrics as JSON."""
    import torch

    from mechscope.errors import MechscopeError
    from mechscope.experiments.grokking.config import PRESETS
    from mechscope.experiments.grokking.run import run

    if preset not in PRESETS:
        raise typer.BadParameter(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
    if threads is not None:
        torch.set_num_threads(threads)
    changes = {"seed": seed, **{k: v for k, v in (("p", p), ("epochs", epochs), ("train_frac", train_frac))
                                if v is not None}}
    try:
        if resume:  # the run's own settings; only --epochs may change
            from mechscope.experiments.grokking.run import read_run_config

            cfg = read_run_config(out).replace(**({"epochs": epochs} if epochs is not None else {}))
        else:
            cfg = PRESETS[preset].replace(**changes)
        if overwrite and out.exists() and not resume:
            if not (out / "run.json").exists():
                raise typer.BadParameter(f"--overwrite: {out} does not look like a run directory; not deleting it")
            shutil.rmtree(out)
        result = run(cfg, out, resume=resume, progress=not no_progress)
    except MechscopeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({"run_dir": str(result.run_dir), "epochs": result.step, **result.last,
                           "wall_seconds": round(result.wall_seconds, 1), "stopped_early": result.stopped_early}))


@app.command("analyze")
def analyze_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory made by `mechscope grokking train`."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (the summary)."),
    history: bool = typer.Option(False, "--history", help="Include per-checkpoint progress measures in the JSON."),
    figures: Path | None = typer.Option(None, "--figures", help="Also write the PNG figures into this directory."),
) -> None:
    """Fourier analysis of a trained run: key frequencies, neuron fits, progress measures."""
    from mechscope.errors import MechscopeError
    from mechscope.experiments.grokking.analysis import cached_analysis
    from mechscope.experiments.grokking.report import SUMMARY_KEYS, save_figures

    try:
        summary = cached_analysis(run_dir)
        if figures is not None:
            save_figures(run_dir, summary, figures)
    except MechscopeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        shown = summary if history else {k: v for k, v in summary.items() if k not in ("history", "embed_freq_energy")}
        json.dump(shown, sys.stdout)
        sys.stdout.write("\n")
        return
    for k in SUMMARY_KEYS:
        typer.echo(f"{k:28s} {summary.get(k)}")
