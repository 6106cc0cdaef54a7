"""``mechscope circuit``: automatic circuit discovery and the validation bench.

    mechscope circuit discover --task ioi --method eap-ig --json --out runs/ioi-circuit
    mechscope circuit discover --task planted --method acdc --threshold 0.01 --json
    mechscope circuit bench --json

``--task ioi`` builds IOI prompts for ``--model`` (default smollm2-135m); the other tasks (``induction``,
``planted``, ``rasp:<program>``) come with their own model and true edge set from
``mechscope.circuits.truth.load_truth``. The circuit kept is ACDC's own, otherwise the top edges by |score|:
``--keep N``, else as many as the task's true circuit has, else ``--fraction`` of all edges, chosen by
``--selection`` (``circuits.select``: ``abs`` top |score|, ``signed``, ``pruned``, ``greedy``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from mechscope.cli.common import fail_cleanly

app = typer.Typer(help="Circuit discovery (exact patching, EAP, EAP-IG, ACDC) and its validation bench.",
                  no_args_is_help=True, add_completion=False)


def _task(task: str, model_name: str | None, n_prompts: int) -> tuple[Any, Any, Any, Any, int | None, Any]:
    """(model, clean, corrupted, metric, readout, true edges or None)."""
    if task == "ioi":
        from mechscope.cli.common import load_model
        from mechscope.experiments.circuits_ioi.run import ioi_task

        model = load_model(model_name or "smollm2-135m")
        clean, corrupted, metric = ioi_task(model, n_prompts)
        return model, clean, corrupted, metric, -1, None
    if model_name is not None:
        from mechscope.errors import ConfigError

        raise ConfigError(f"--model applies to --task ioi only; task {task!r} comes with its own model")
    from mechscope.circuits.truth import load_truth

    t = load_truth(task)
    return t.model, t.clean, t.corrupted, t.metric, t.readout, t.edges


@app.command("discover")
def discover_cmd(
    task: str = typer.Option(..., "--task", help="ioi | induction | planted | rasp:<program>."),
    method: str = typer.Option("eap-ig", "--method", help="exact | eap | eap-ig | acdc."),
    model: str | None = typer.Option(None, "--model", help="Model for --task ioi (default smollm2-135m)."),
    n_prompts: int = typer.Option(32, "--n-prompts", help="IOI prompts."),
    steps: int = typer.Option(5, "--steps", help="EAP-IG integration steps."),
    threshold: float = typer.Option(0.01, "--threshold", help="ACDC threshold tau."),
    keep: int | None = typer.Option(None, "--keep", help="Edges in the circuit (not ACDC)."),
    fraction: float = typer.Option(0.05, "--fraction", help="Circuit size as a fraction, when no --keep / truth."),
    selection: str = typer.Option("abs", "--selection",
                                  help="How the circuit is chosen from the scores: abs | signed | pruned | greedy."),
    top: int = typer.Option(200, "--top", help="Edges listed in the output."),
    out: Path | None = typer.Option(None, "--out", help="Directory for summary.json, scores.json, circuit.svg."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    threads: int | None = typer.Option(None, "--threads", help="torch threads."),
) -> None:
    """Score every edge with one method, keep a circuit and report its faithfulness (normalised recovery)."""
    import torch

    from mechscope.circuits.discover import discover
    from mechscope.circuits.evaluate import evaluate
    from mechscope.circuits.select import SELECTIONS, select
    from mechscope.errors import ConfigError

    if threads is not None:
        torch.set_num_threads(threads)
    per_method: dict[str, dict[str, Any]] = {"eap-ig": {"steps": steps, "chunk": 1}, "acdc": {"threshold": threshold}}
    options = per_method.get(method, {})
    with fail_cleanly():
        if selection not in SELECTIONS:
            raise ConfigError(f"--selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
        m, clean, corrupted, metric, readout, truth = _task(task, model, n_prompts)
        t0 = time.perf_counter()
        scores = discover(m, clean, corrupted, metric, method=method, readout=readout, **options)
        wall = time.perf_counter() - t0
        n_total = len(scores.graph.edges)
        if scores.kept is not None:
            circuit = scores.circuit()
        else:
            size = keep if keep is not None else (len(truth) if truth else int(round(fraction * n_total)))
            circuit = select(scores, min(size, n_total), selection)  # type: ignore[arg-type]
        with torch.no_grad():
            faith = evaluate(m, clean, corrupted, metric, circuit.edges, readout=readout)
    summary: dict[str, Any] = {"task": task, "method": method, "selection": selection if scores.kept is None else None,
               "n_edges_total": n_total, "n_edges_kept": len(circuit),
               "faithfulness": faith, "wall_seconds": wall, "edges": [[n, s] for n, s in scores.ranked(top)]}
    if out is not None:
        _write(out, summary, scores, circuit)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"{method} on {task}: kept {len(circuit)} of {n_total} edges, faithfulness {faith:.3f}, "
               f"{wall:.1f} s")
    for name, score in summary["edges"][:20]:
        typer.echo(f"  {score:+.4f}  {name}")


def _write(out: Path, summary: dict[str, Any], scores: Any, circuit: Any) -> None:
    from mechscope.circuits.draw import circuit_svg, write_text

    out.mkdir(parents=True, exist_ok=True)
    for name, payload in (("summary.json", summary), ("scores.json", scores.to_dict())):
        write_text(json.dumps(payload), out / name)
    shown = scores.top(min(len(circuit), 150)) if scores.kept is None else circuit
    write_text(circuit_svg(shown, scores, title=f"{summary['task']} / {summary['method']}"), out / "circuit.svg")


@app.command("bench")
def bench_cmd(
    methods: str | None = typer.Option(None, "--methods", help="Comma-separated methods (default: all)."),
    truths: str | None = typer.Option(None, "--truths", help="Comma-separated ground truths (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Score every method on every ground truth (ROC AUC, faithfulness at the circuit's size, wall time)."""
    from mechscope.circuits.bench import run_bench

    with fail_cleanly():
        rows = run_bench(methods=methods.split(",") if methods else None, truths=truths.split(",") if truths else None)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        typer.echo("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
