"""Top-level commands: ``info``, ``generate``, ``verify``, ``tour``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mechscope.cli.common import fail_cleanly, load_model, unit_interval


def info(model: str = typer.Argument(..., help="Registered name (smollm2-135m), .gguf file or model directory"),
         json_out: bool = typer.Option(False, "--json", help="Print one JSON object"),
         pos: int = typer.Option(8, min=1, help="Sequence length used to show hook shapes")) -> None:
    """Architecture, parameter count and every hook name with its shape."""
    with fail_cleanly():
        from mechscope.hooks.names import registered_axes, resolve_shape

        m = load_model(model)
        sizes = m.cfg.dim_sizes(batch=1, pos=pos)
        hooks = {n: list(resolve_shape(registered_axes(n), sizes)) for n in m.hook_dict}
        n_params = m.n_params()
        out = {"name": m.cfg.name, "architecture": m.cfg.architecture, "n_params": n_params,
               "config": m.cfg.to_dict(), "n_hooks": len(hooks), "hooks": hooks}
        if json_out:
            typer.echo(json.dumps(out, indent=2))
            return
        c = m.cfg
        typer.echo(f"{c.name}  ({c.architecture})  {n_params:,} parameters")
        typer.echo(f"  layers {c.n_layers}  d_model {c.d_model}  heads {c.n_heads} (kv {c.attention.kv_heads}) x d_head "
                   f"{c.d_head}  d_mlp {c.d_mlp}  vocab {c.d_vocab}  n_ctx {c.n_ctx}")
        typer.echo(f"  norm {c.norm.kind}  positions {c.positional.kind}  mlp {c.mlp.kind + '/' + c.mlp.act if c.mlp else 'none'}"
                   f"  parallel {c.parallel_attn_mlp}")
        typer.echo(f"{len(hooks)} hook points (shapes for batch=1, pos={pos}):")
        for n, s in hooks.items():
            typer.echo(f"  {n:<40} {s}")


def generate(model: str = typer.Argument(..., help="Model name or path"),
             prompt: list[str] = typer.Argument(..., help="One or more prompts"),
             max_new_tokens: int = typer.Option(30, "--max-new-tokens", "-n", min=0),
             temperature: float = typer.Option(0.0, min=0.0, help="0 = greedy"),
             top_k: int | None = typer.Option(None, min=1, help="Sample among the k most likely tokens."),
             top_p: float | None = typer.Option(None, callback=unit_interval("--top-p"),
                                                help="Nucleus sampling mass in (0, 1]."),
             seed: int | None = typer.Option(None)) -> None:
    """Generate continuations (KV cache, padded batches)."""
    with fail_cleanly():
        from mechscope.models.generate import generate as gen

        m = load_model(model)
        out = gen(m, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                  seed=seed)
        for p, t in zip(prompt, out.texts):
            typer.echo(f"{p}\u2192{t}" if len(prompt) > 1 else p + t)


def verify(model: str = typer.Argument("smollm2-135m", help="Registered name, .gguf file, or HF directory"),
           json_out: bool = typer.Option(False, "--json"),
           dtypes: str = typer.Option("float32,bfloat16", help="Comma-separated dtypes to certify")) -> None:
    """Parity certificate: max |Δ| of logits and every shared activation against transformers."""
    with fail_cleanly():
        from mechscope.models.verify import verify_model

        report = verify_model(model, [d.strip() for d in dtypes.split(",") if d.strip()])
        if json_out:
            typer.echo(json.dumps(report, indent=2))
            return
        typer.echo(f"Parity of mechscope vs transformers for {report['model']} ({report['reference']})")
        typer.echo(f"{'dtype':<10} {'logits max|Δ|':>14} {'logit scale':>12} {'hooks':>6} {'worst hook max|Δ|':>18}  worst hook")
        for r in report["results"]:
            typer.echo(f"{r['dtype']:<10} {r['logits_max_abs']:>14.3g} {r['logit_scale']:>12.3g} {r['n_hooks_compared']:>6} "
                       f"{r['worst_hook_max_abs']:>18.3g}  {r['worst_hook']}")
        for r in report["results"]:
            if "ours_err_vs_float32" in r:
                typer.echo(f"{r['dtype']}: error vs float32 logits — mechscope {r['ours_err_vs_float32']:.3g}, "
                           f"transformers {r['transformers_err_vs_float32']:.3g} (pass if ≤ {r['limit']:.3g})")
        typer.echo("verdict: " + report["verdict"])


def tour(out: Path = typer.Option(Path("out/tour"), help="Output directory for index.html"),
         quick: bool = typer.Option(False, help="Fewer prompts and shorter runs")) -> None:
    """Load SmolLM2 and write a self-contained HTML report of what mechscope does."""
    with fail_cleanly():
        from mechscope.experiments.tour import run_tour

        result = run_tour(out, quick=quick)
        typer.echo(f"wrote {result.path} in {result.seconds:.0f} s ({len(result.sections)} sections)")
        if result.failed:
            typer.echo(f"sections that failed: {', '.join(result.failed)}", err=True)
            raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the top-level commands to the ``mechscope`` app."""
    app.command()(info)
    app.command()(generate)
    app.command()(verify)
    app.command()(tour)
