"""``mechscope heads MODEL``: rank any model's previous-token, duplicate-token and induction heads."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    """Add the top-level ``heads`` command to ``app``."""
    app.command("heads")(heads_cmd)


def heads_cmd(
    model: str = typer.Argument(..., help="A registered name (smollm2-135m), a .gguf file or a saved model directory."),
    half_len: int = typer.Option(40, "--half-len", min=1, help="Length of the random sequence that is repeated."),
    batch: int = typer.Option(4, "--batch", min=1, help="Number of random sequences."),
    top: int = typer.Option(10, "--top", min=1, help="Heads listed per detector."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random tokens."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    html: str | None = typer.Option(None, "--html", help="Also write an interactive attention page of the top heads."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch threads (default: torch's choice)."),
) -> None:
    """Detector scores on a random token sequence repeated twice (induction, previous-token, duplicate-token)."""
    import torch

    import mechscope
    from mechscope.analysis.heads import detect_heads, rank_heads
    from mechscope.errors import MechscopeError

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        m = mechscope.load(model).eval()
        if half_len * 2 + 1 > m.cfg.n_ctx:
            raise typer.BadParameter(f"--half-len {half_len} needs a context of {2 * half_len + 1} > n_ctx={m.cfg.n_ctx}")
        hs = detect_heads(m, half_len=half_len, batch=batch, seed=seed)
        out = {"model": model, "induction_heads": rank_heads(hs.induction, top),
               "prev_token_heads": rank_heads(hs.previous_token, top),
               "duplicate_token_heads": rank_heads(hs.duplicate_token, top),
               "chance": {k: round(v, 4) for k, v in hs.chance.items()}}
        if html:
            from mechscope.experiments.induction.report import smollm2_view
            from mechscope.viz.attention import attention_page

            attention_page(html, [smollm2_view(m, out)], title=f"{model}: top induction heads")
    except MechscopeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(out, indent=1))
        return
    for key in ("induction_heads", "prev_token_heads", "duplicate_token_heads"):
        typer.echo(f"{key}: " + ", ".join(f"L{lh[0]}.H{lh[1]}={lh[2]:.2f}" for lh in out[key]))
    typer.echo(f"chance: {out['chance']}")
