"""``mechscope patch``: activation patching from the command line.

    mechscope patch ioi --json              IOI case study summary (logit diff, accuracy, heads, backups)
    mechscope patch facts --json            factual-recall patching summary
    mechscope patch --model smollm2-135m --clean "..." --corrupted "..." --answer " X" --wrong " Y" --sweep resid
    mechscope patch run ...                 the same generic sweep, as an explicit sub-command
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from mechscope.cli.common import CleanGroup

app = typer.Typer(help="Activation / attribution patching sweeps and the IOI case study.",
                  invoke_without_command=True, add_completion=False, cls=CleanGroup)

_MODEL = typer.Option("smollm2-135m", "--model", help="Model name for mechscope.load.")
METHODS = ("exact", "attribution")


def _sweep(model_name: str, clean: str, corrupted: str, answer: str, wrong: str, sweep: str, direction: str,
           method: str, out: Path | None, as_json: bool) -> None:
    import torch

    import mechscope
    from mechscope.data.prompts import make_pairs
    from mechscope.errors import ConfigError
    from mechscope.interventions.attribution import attribution_sweep
    from mechscope.interventions.patching import patch_sweep, sweep_kind
    from mechscope.viz.report import save_figure

    if method not in METHODS:  # checked before the model loads
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if direction not in ("denoise", "noise"):
        raise ConfigError(f"--direction must be denoise or noise, got {direction!r}")
    sweep_kind(sweep)
    model = mechscope.load(model_name)
    pairs = make_pairs(model.tokenizer, [clean], [corrupted], [answer], [wrong])
    fn = patch_sweep if method == "exact" else attribution_sweep
    with torch.inference_mode(method == "exact"):
        res = fn(model, pairs.clean, pairs.corrupted, pairs.metric(), sweep, direction=direction,
                 pos_labels=pairs.pos_labels)
    summary: dict[str, Any] = {"sweep": res.sweep, "direction": direction, "method": method,
                               "clean_logit_diff": res.clean, "corrupted_logit_diff": res.corrupted,
                               "top": res.top(10)}
    if out is not None:
        summary["figure"] = str(save_figure(res.heatmap(), out))
        from mechscope.io_safety import atomic_write_json

        summary["result"] = str(atomic_write_json(Path(out).with_suffix(".json"), res.to_dict()))  # mechscope serve
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
    else:
        typer.echo(f"clean {res.clean:.3f}  corrupted {res.corrupted:.3f}  ({res.sweep}, {direction}, {method})")
        for site, v in res.top(10):
            typer.echo(f"  {'/'.join(site):>30}  {v:+.3f}")


@app.callback()
def main(ctx: typer.Context, model: str = _MODEL,
         clean: str | None = typer.Option(None, help="Clean prompt."),
         corrupted: str | None = typer.Option(None, help="Corrupted prompt (same number of tokens)."),
         answer: str | None = typer.Option(None, help="Correct answer token, e.g. ' Mary'."),
         wrong: str | None = typer.Option(None, help="Wrong answer token, e.g. ' John'."),
         sweep: str = typer.Option("resid_pre", help="resid_pre|resid_mid|resid_post|attn_out|mlp_out|z|z_by_pos|"
                                                   "q|k|v|pattern (aliases: resid, heads, heads_by_pos)."),
         direction: str = typer.Option("denoise", help="denoise (clean into corrupted) or noise."),
         method: str = typer.Option("exact", help="exact or attribution."),
         out: Path | None = typer.Option(None, help="Write the heatmap PNG here (and the result as JSON next to it)."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Generic sweep when called with --clean/--corrupted and no sub-command."""
    if ctx.invoked_subcommand is not None:
        given = [p.opts[0] for p in ctx.command.params
                 if getattr(ctx.get_parameter_source(p.name), "name", "DEFAULT") != "DEFAULT"]
        if given:  # they would be silently ignored: the sub-command has its own options
            raise typer.BadParameter(
                f"{', '.join(given)} given before the sub-command {ctx.invoked_subcommand!r}; put options after "
                f"it: mechscope patch {ctx.invoked_subcommand} {' '.join(given)} ...")
        return
    if clean is None or corrupted is None or answer is None or wrong is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0 if clean is None else 2)
    _sweep(model, clean, corrupted, answer, wrong, sweep, direction, method, out, as_json)


@app.command("run")
def run_cmd(clean: str = typer.Option(..., help="Clean prompt."),
            corrupted: str = typer.Option(..., help="Corrupted prompt (same number of tokens)."),
            answer: str = typer.Option(..., help="Correct answer token."),
            wrong: str = typer.Option(..., help="Wrong answer token."),
            model: str = _MODEL, sweep: str = typer.Option("resid_pre", help="Sweep kind."),
            direction: str = typer.Option("denoise", help="denoise or noise."),
            method: str = typer.Option("exact", help="exact or attribution."),
            out: Path | None = typer.Option(None, help="Write the heatmap PNG here (and the result as JSON next to it)."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """One patching sweep on one clean/corrupted pair."""
    _sweep(model, clean, corrupted, answer, wrong, sweep, direction, method, out, as_json)


@app.command("ioi")
def ioi_cmd(model: str = _MODEL, out_dir: Path = typer.Option(Path("runs/ioi"), help="Run directory."),
            n_patch: int = typer.Option(8, min=1, help="Prompts in the patching batch."),
            n_per_template: int = typer.Option(16, min=1, help="Prompts per template for accuracy."),
            n_path_senders: int = typer.Option(20, min=1, help="Senders tried in path patching."),
            n_facts: int = typer.Option(8, min=0, help="Factual-recall patching prompts (0 skips)."),
            as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON.")) -> None:
    """IOI case study: logit diff, accuracy, head roles, backup heads (+ factual recall)."""
    import mechscope
    from mechscope.experiments.ioi.run import IOIConfig, run

    cfg = IOIConfig(out_dir=str(out_dir), n_patch=n_patch, n_per_template=n_per_template,
                    n_path_senders=n_path_senders, n_facts=n_facts)
    s = run(cfg, mechscope.load(model))
    _report(s, as_json, keys=("behaviour", "circuit", "facts"))


@app.command("facts")
def facts_cmd(model: str = _MODEL, out_dir: Path = typer.Option(Path("runs/facts"), help="Run directory."),
              n_facts: int = typer.Option(8, min=1, help="Prompts in the patching batch."),
              as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON.")) -> None:
    """Factual recall: which layers / positions carry landmark → city."""
    import mechscope
    from mechscope.experiments.ioi.run import IOIConfig, facts

    out_dir.mkdir(parents=True, exist_ok=True)
    s = facts(mechscope.load(model), IOIConfig(out_dir=str(out_dir), n_facts=n_facts), out_dir)
    _report({"facts": s}, as_json, keys=("facts",))


def _report(s: dict[str, Any], as_json: bool, keys: tuple[str, ...]) -> None:
    if as_json:
        typer.echo(json.dumps({k: s[k] for k in keys if k in s}, indent=1))
        return
    for k in keys:
        if k in s:
            typer.echo(f"== {k}")
            for kk, v in s[k].items():
                if kk not in ("per_template", "known", "patch_prompts"):
                    typer.echo(f"  {kk}: {v}")
