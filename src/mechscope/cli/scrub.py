"""``mechscope scrub``: causal scrubbing case studies (``--json``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mechscope.cli.common import fail_cleanly

app = typer.Typer(help="Causal scrubbing (Chan et al.): test hypotheses by resampling activations.", no_args_is_help=True)


@app.command("induction")
def induction_cmd(
    run_dir: Path = typer.Argument(..., help="Directory of the two-layer attention-only model (trained there, seeded, "
                                   "if it holds none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of training (new runs) and of the resampling."),
    steps: int | None = typer.Option(None, "--steps", help="Training steps for a new run."),
    n_eval: int | None = typer.Option(None, "--n-eval", help="Evaluation sequences (default 64)."),
    resample: str = typer.Option("shared", "--resample", help="shared (one random input for every unimportant "
                                 "path) | per_path (the paper's: an independent draw per path)."),
    threads: int | None = typer.Option(None, "--threads"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Loss recovered by the full-induction, previous-token-head-only and induction-head-only hypotheses."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    with fail_cleanly():
        from mechscope.experiments.scrub_induction.run import ScrubInductionConfig, run

        cfg = ScrubInductionConfig(seed=seed)
        cfg = ScrubInductionConfig(seed=seed, steps=steps if steps is not None else cfg.steps,
                                   n_eval=n_eval if n_eval is not None else cfg.n_eval)
        res = run(run_dir, cfg, resample=resample)
    typer.echo(json.dumps(res) if as_json else "\n".join(
        f"{h['name']}: loss {h['loss']}, loss recovered {h['loss_recovered']:.1%}" for h in res["hypotheses"]))
