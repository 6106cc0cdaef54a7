"""``mechscope induction``: train attention-only models on real text and find their circuits and induction heads."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Transformer circuits from the weights and induction heads on real text.",
                  no_args_is_help=True)


@app.command("train")
def train_cmd(
    out: Path = typer.Option(..., "--out", help="Run directory (zero_layer/, one_layer/, two_layer/ inside)."),
    corpus: str = typer.Option("stdlib-source", "--corpus", help="stdlib-source, stdlib-docs, python-docs, "
                               "shakespeare, or a .txt/.jsonl file or directory."),
    tokenizer: str = typer.Option("smollm2", "--tokenizer", help="smollm2 (BPE; use with --vocab-size) or bytes (vocab 257)."),
    vocab_size: int = typer.Option(2048, "--vocab-size", help="Keep the N-1 most frequent tokens + OOV; "
                                   "0 keeps the tokenizer's whole vocabulary (use 0 with --tokenizer bytes)."),
    positional: str = typer.Option("learned", "--positional", help="learned (exact circuits), rotary, or shortformer (positions in Q/K inputs only)."),
    pos_init: str = typer.Option("sinusoidal", "--pos-init", help="Initial learned positions: normal (random) or "
                                 "sinusoidal (Vaswani's table, then trained; previous-token heads form at long contexts)."),
    norm: str = typer.Option("layernorm", "--norm", help="none (exact circuits) or layernorm (pre-norm)."),
    steps: int = typer.Option(3000, "--steps", min=1, help="Updates of the two-layer model."),
    eval_every: int = typer.Option(50, "--eval-every", min=1, help="Evaluate ICL/induction scores every N updates."),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", min=1, help="Keep weights every N updates."),
    d_model: int = typer.Option(256, "--d-model", min=1, help="Residual width."),
    n_heads: int = typer.Option(8, "--n-heads", min=1, help="Heads per layer."),
    d_head: int = typer.Option(32, "--d-head", min=1, help="Per-head dimension."),
    n_ctx: int = typer.Option(256, "--n-ctx", min=1, help="Context length."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Sequences per update."),
    lr: float = typer.Option(3e-3, "--lr", help="Peak learning rate."),
    warmup_steps: int = typer.Option(100, "--warmup-steps", min=0, help="Linear learning-rate warm-up updates."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="AdamW weight decay."),
    repeat_frac: float = typer.Option(1.0, "--repeat-frac", help="Fraction of two-layer training sequences that "
                                      "end with a copy of an earlier span of themselves, at a random offset (0: the "
                                      "corpus as is)."),
    curriculum_steps: int = typer.Option(2500, "--curriculum-steps", min=0, help="Updates that read --repeat-frac "
                                         "copies; the rest of --steps are a cool-down at --cooldown-repeat-frac "
                                         "(0: copies to the end)."),
    cooldown_repeat_frac: float = typer.Option(0.25, "--cooldown-repeat-frac", help="--repeat-frac after "
                                               "--curriculum-steps (0: the corpus as is)."),
    stop_at_induction: float | None = typer.Option(None, "--stop-at-induction", help="Stop the two-layer model "
                                                   "once its induction score is >= this and has plateaued."),
    precision: str = typer.Option("float32", "--precision", help="float32, or bfloat16 (autocast; float32 weights "
                                  "and optimiser; faster on CPUs with AMX)."),
    seed: int = typer.Option(0, "--seed", help="Seed of weights, batches and the corpus split."),
    only: str = typer.Option("zero_layer,one_layer,two_layer", "--only", help="Comma-separated models to train."),
    resume: bool = typer.Option(False, "--resume", help="Continue interrupted runs from their latest checkpoints."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch threads (default: torch's choice)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bars."),
) -> None:
    """Train the zero-, one- and two-layer attention-only models; prints a JSON summary."""
    import torch

    from mechscope.errors import MechscopeError
    from mechscope.experiments.induction.config import InductionConfig
    from mechscope.experiments.induction.run import train

    if threads is not None:
        torch.set_num_threads(threads)
    names = tuple(s.strip() for s in only.split(",") if s.strip())
    bad = [n for n in names if n not in ("zero_layer", "one_layer", "two_layer")]
    if bad:
        raise typer.BadParameter(f"--only accepts zero_layer, one_layer, two_layer; got {bad}")
    try:
        cfg = InductionConfig(corpus=corpus, tokenizer=tokenizer, vocab_size=vocab_size or None, positional=positional,
                              pos_init=pos_init, norm=norm, warmup_steps=warmup_steps, weight_decay=weight_decay,
                              repeat_frac=repeat_frac, curriculum_steps=curriculum_steps or None, cooldown_repeat_frac=cooldown_repeat_frac, stop_at_induction=stop_at_induction, steps=steps, d_model=d_model, n_heads=n_heads, d_head=d_head, n_ctx=n_ctx,
                              batch_size=batch_size, lr=lr, seed=seed, eval_every=eval_every,
                              checkpoint_every=checkpoint_every, precision=precision)
        summary = train(cfg, out, progress=not no_progress, resume=resume, only=names)
    except MechscopeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary, indent=1, default=str))


@app.command("analyze")
def analyze_cmd(
    run_dir: Path = typer.Argument(..., help="A directory made by `mechscope induction train`."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
    img: Path | None = typer.Option(None, "--img", help="Also save the pictures (PNG) into this directory."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch threads (default: torch's choice)."),
) -> None:
    """Bigram correlation, verified skip-trigrams, induction / previous-token heads, K-composition, phase change."""
    import torch

    from mechscope.errors import MechscopeError
    from mechscope.experiments.induction.analysis import analyze, public

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        result = analyze(run_dir)
        if img is not None:
            from mechscope.experiments.induction.report import figures

            result["images"] = {k: str(v) for k, v in figures(result, img).items()}
    except MechscopeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    pub = public(result)
    if as_json:
        typer.echo(json.dumps(pub, indent=1))
        return
    for key in ("bigram_corr", "skip_trigrams_verified", "icl_score_final", "icl_score_before_cooldown", "induction_score_final",
                "phase_change_step", "icl_halfway_step", "best_induction_head"):
        if key in pub:
            typer.echo(f"{key}: {pub[key]}")
    for key in ("induction_heads", "prev_token_heads", "k_composition_top"):
        if key in pub:
            typer.echo(f"{key}: {pub[key][:5]}")
    if "circuit" in pub:
        c = pub["circuit"]
        failed = [k for k, ok in c["checks"].items() if not ok]
        typer.echo("circuit: induction head fed by a previous-token head: "
                   + ("formed" if c["formed"] else f"not formed (failed: {', '.join(failed)})"))
