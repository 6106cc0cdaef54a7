"""``mechscope dict stream``: train straight from the model (no store) — registered on the ``dict`` group.

    mechscope dict stream --model smollm2-135m --hooks blocks.15.hook_resid_post --tokens 1000000 \\
        --arch topk --k 32 --d-sae 4608 --out runs/topk-stream [--spill acts/]
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mechscope.cli.common import fail_cleanly, load_model
from mechscope.cli.dictionaries import app
from mechscope.errors import ConfigError


@app.command()
def stream(
    model: str = typer.Option("smollm2-135m", "--model", help="Model name or path for mechscope.load."),
    hooks: str = typer.Option(..., "--hooks", help="Comma-separated hooks the dictionary reads (transcoder: input,"
                              "target; crosscoder: several)."),
    tokens: int = typer.Option(..., "--tokens", help="Activation rows streamed (one pass)."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, metrics.jsonl, dictionary/)."),
    arch: str = typer.Option("topk", "--arch", help="Any registered architecture (`mechscope dict archs`)."),
    d_sae: int = typer.Option(4608, "--d-sae", help="Number of latents."),
    k: int | None = typer.Option(None, "--k", help="Active latents (topk, batchtopk, matryoshka, transcoder)."),
    l1: float | None = typer.Option(None, "--l1", help="L1 coefficient (relu, gated, crosscoder, transcoder)."),
    normalize: str = typer.Option("expected_norm", "--normalize", help="expected_norm | none."),
    batch_size: int = typer.Option(4096, "--batch-size", help="Tokens per step."),
    steps: int | None = typer.Option(None, "--steps", help="Optimiser steps (default: tokens / batch size)."),
    lr: float = typer.Option(4e-4, "--lr", help="Peak Adam learning rate."),
    buffer_rows: int = typer.Option(2**17, "--buffer-rows", help="Mixing-buffer capacity (rows)."),
    seed: int = typer.Option(0, "--seed", help="Seed of chunk order, data order and initialisation."),
    precision: str = typer.Option("float32", "--precision", help="float32 | bfloat16 (training autocast)."),
    corpus: str = typer.Option("stdlib-docs", "--corpus", help="Named corpus or a path."),
    seq_len: int = typer.Option(128, "--seq-len", help="Tokens per sequence."),
    seq_batch: int = typer.Option(16, "--seq-batch", help="Sequences per forward pass."),
    tokenizer: str = typer.Option("auto", "--tokenizer", help="auto | smollm2 | bytes."),
    spill: Path | None = typer.Option(None, "--spill", help="Also write the streamed rows to a new store here."),
    shard_rows: int = typer.Option(65536, "--shard-rows", help="Rows per shard of the --spill store."),
    no_estimate: bool = typer.Option(False, "--no-estimate", help="Skip the size/RAM/speed estimate and its check."),
) -> None:
    """Train a dictionary on activations streamed from the model through the mixing buffer (no harvest)."""
    import torch

    from mechscope.distributed import init_from_env
    from mechscope.experiments.scale import corpus_source
    from mechscope.experiments.streaming import train_streaming

    hook_list = [h.strip() for h in hooks.split(",") if h.strip()]
    options: dict[str, object] = {"k": k, "l1_coefficient": l1, "normalize_activations": normalize, "seed": seed}
    if arch == "crosscoder":
        options["hook_names"] = tuple(hook_list)
    with fail_cleanly():
        if init_from_env().world_size > 1:
            raise ConfigError("`dict stream` runs on one process (every rank would redo the forward passes); under "
                              "torchrun, `dict harvest` then `dict train`")
        m = load_model(model)
        src = corpus_source(m, hook_list, corpus=corpus, seq_len=seq_len, batch_size=seq_batch, tokenizer=tokenizer,
                            seed=seed)
        with torch.inference_mode(False):
            d = train_streaming(src, out, arch, n_tokens=tokens, d_sae=d_sae, options=options, batch_size=batch_size,
                                steps=steps, lr=lr, buffer_rows=buffer_rows, seed=seed, precision=precision,
                                spill=spill, shard_rows=shard_rows, model_name=model, estimate=not no_estimate)
    typer.echo(json.dumps({"out": str(out / "dictionary"), "arch": d.cfg.architecture, "d_in": d.cfg.d_in,
                           "d_sae": d.cfg.d_sae, "hook": d.cfg.hook_name, "spill": None if spill is None else str(spill)}))
