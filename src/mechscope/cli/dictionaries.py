"""``mechscope dict``: harvest activations, train sparse dictionaries, evaluate them inside the model.

    mechscope dict harvest --model smollm2-135m --hooks blocks.15.hook_resid_post --tokens 1000000 --out acts/
    mechscope dict train --activations acts/ --arch topk --k 32 --d-sae 4608 --out runs/topk
    mechscope dict eval runs/topk --json
    mechscope dict archs

``harvest`` and ``train`` resume when rerun with the same ``--out``. ``train`` accepts every registered
architecture; options that do not apply to it (``--k`` for ``relu``) are refused.

Launched under ``torchrun`` (``RANK``/``WORLD_SIZE`` set), the same commands run distributed: ``harvest``
deals the shards over the ranks, ``train`` is data parallel (or hookpoint parallel with
``--distribute-hooks``); see docs/scaling.md.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import typer

from mechscope.cli.common import fail_cleanly, load_model
from mechscope.cli.dict_app import app
from mechscope.errors import ConfigError

EVAL_KEYS = ("l0", "mse", "fvu", "ce_loss_recovered", "kl", "dead_fraction", "dense_fraction")


@app.command()
def harvest(
    model: str = typer.Option("smollm2-135m", "--model", help="Model name or path for mechscope.load."),
    hooks: str = typer.Option(..., "--hooks", help="Comma-separated hook names, e.g. blocks.15.hook_resid_post."),
    tokens: int = typer.Option(..., "--tokens", min=1, help="Activation rows (tokens) to harvest per hook."),
    out: Path = typer.Option(..., "--out", help="Store directory (rerun to resume or extend)."),
    corpus: str = typer.Option("stdlib-docs", "--corpus", help="Named corpus or a path (see mechscope.data.corpus)."),
    seq_len: int = typer.Option(128, "--seq-len", min=1, help="Tokens per sequence."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Sequences per forward pass."),
    tokenizer: str = typer.Option("auto", "--tokenizer", help="auto | smollm2 | bytes (corpus tokenisation)."),
    shard_rows: int = typer.Option(65536, "--shard-rows", min=1, help="Rows per shard file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the chunk order."),
    model_dtype: str = typer.Option("float32", "--model-dtype", help="float32 | bfloat16: run the model in this dtype "
                                    "(bf16 is several times faster on CPUs with AMX; recorded in the manifest)."),
    dtype: str = typer.Option("float32", "--dtype", help="Store dtype: float32 | bfloat16 | float16."),
    no_estimate: bool = typer.Option(False, "--no-estimate", help="Skip the size/RAM/speed estimate and its check."),
) -> None:
    """Stream a corpus through the model and store activations of HOOKS (one pass, stops after the last block)."""
    import torch

    from mechscope.distributed import init_from_env
    from mechscope.experiments.dictionaries.run import harvest as run
    from mechscope.experiments.scale import harvest_distributed

    with fail_cleanly():
        sync = init_from_env()
        if sync.world_size > 1:
            run = partial(harvest_distributed, sync=sync, progress=sync.is_writer)  # type: ignore[assignment]
        if model_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"--model-dtype must be float32 or bfloat16, got {model_dtype!r}")
        m = load_model(model).to(getattr(torch, model_dtype))
        hook_list = [h.strip() for h in hooks.split(",") if h.strip()]
        if not no_estimate:
            from mechscope.experiments.estimate import announce, harvest_estimate
            from mechscope.experiments.scale import corpus_source, harvest_metadata

            src = corpus_source(m, hook_list, corpus=corpus, seq_len=seq_len, batch_size=batch_size,
                                tokenizer=tokenizer, seed=seed)
            with torch.inference_mode():
                est = harvest_estimate(src, tokens, out, shard_rows=shard_rows, dtype=dtype,
                                       metadata=harvest_metadata(m, model, corpus),
                                       world_size=sync.world_size if sync.world_size > 1 else None)
            announce(est, sync.is_writer)
        with torch.inference_mode():
            store = run(m, hook_list, tokens, out, corpus=corpus,
                        seq_len=seq_len, batch_size=batch_size, tokenizer=tokenizer, shard_rows=shard_rows,
                        seed=seed, model_name=model, dtype=dtype)
        if sync.is_writer:
            typer.echo(json.dumps({"out": str(out), "rows": store.n_rows, "hooks": store.hooks,
                                   "shards": len(store.manifest["shards"]), "world_size": sync.world_size}))


@app.command()
def train(
    activations: Path = typer.Option(..., "--activations", help="Store directory from `dict harvest`."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, metrics.jsonl, dictionary/)."),
    arch: str = typer.Option("topk", "--arch", help="relu | topk | batchtopk | jumprelu | gated | transcoder | crosscoder."),
    d_sae: int = typer.Option(4608, "--d-sae", min=1, help="Number of latents."),
    k: int | None = typer.Option(None, "--k", min=1, help="Active latents (topk, batchtopk; transcoder: TopK)."),
    l1: float | None = typer.Option(None, "--l1", help="L1 coefficient (relu, gated, crosscoder, transcoder)."),
    l0: float | None = typer.Option(None, "--l0", help="L0 coefficient (jumprelu)."),
    init_threshold: float | None = typer.Option(
        None, "--init-threshold", help="Initial threshold of every latent (jumprelu; >= 0, in normalised units; "
        "default 0.001). The effective sparsity knob for short runs, see docs/dictionaries.md."),
    hook: list[str] | None = typer.Option(None, "--hook", help="Hook(s) to read; transcoder: input then target; crosscoder: several."),  # noqa: E501
    normalize: str = typer.Option("expected_norm", "--normalize", help="expected_norm | none."),
    batch_size: int = typer.Option(4096, "--batch-size", min=1, help="Tokens per step."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Optimiser steps (default: epochs over the store)."),
    epochs: int = typer.Option(1, "--epochs", min=1, help="Passes over the store when --steps is not given."),
    lr: float = typer.Option(4e-4, "--lr", help="Peak Adam learning rate."),
    buffer_rows: int = typer.Option(2**17, "--buffer-rows", min=1, help="Mixing-buffer capacity (rows)."),
    seed: int = typer.Option(0, "--seed", help="Seed of data order and initialisation."),
    precision: str = typer.Option("float32", "--precision", help="float32 | bfloat16 (autocast matmuls, float32 "
                                  "weights and Adam; several times faster on CPUs with AMX)."),
    distribute_hooks: bool = typer.Option(False, "--distribute-hooks", help="One dictionary per --hook, in "
                                          "OUT/<hook>/; under torchrun each rank trains its share of the hooks."),
    no_estimate: bool = typer.Option(False, "--no-estimate", help="Skip the RAM/speed estimate and its check."),
) -> None:
    """Train a dictionary on harvested activations (rerun the same command to resume)."""
    from mechscope.distributed import init_from_env
    from mechscope.experiments.dictionaries.run import train_on_store
    from mechscope.experiments.scale import train_hooks

    options: dict[str, object] = {"k": k, "l1_coefficient": l1, "l0_coefficient": l0, "init_threshold": init_threshold,
                                  "normalize_activations": normalize, "seed": seed}
    if arch == "crosscoder" and hook:
        options["hook_names"] = tuple(hook)  # recorded so `dict eval` can splice it without --hook
    with fail_cleanly():
        sync = init_from_env()
        common = dict(d_sae=d_sae, options=options, batch_size=batch_size, steps=steps, epochs=epochs, lr=lr,
                      buffer_rows=buffer_rows, seed=seed, precision=precision, estimate=not no_estimate)
        if distribute_hooks:
            if not hook:
                raise ConfigError("--distribute-hooks needs the hooks to train, as --hook A --hook B ...")
            runs = train_hooks(activations, out, arch, hooks=hook, sync=sync, progress=sync.is_writer,
                               **common)  # type: ignore[arg-type]
            if sync.is_writer:
                typer.echo(json.dumps({"out": str(out), "arch": arch, "runs": {h: str(p) for h, p in runs.items()},
                                       "world_size": sync.world_size}))
            return
        d = train_on_store(activations, out, arch, hooks=hook, sync=sync, progress=sync.is_writer,
                           **common)  # type: ignore[arg-type]
    if not sync.is_writer:
        return
    typer.echo(json.dumps({"out": str(out / "dictionary"), "arch": d.cfg.architecture, "d_in": d.cfg.d_in,
                           "d_sae": d.cfg.d_sae, "hook": d.cfg.hook_name}))


@app.command("eval")
def evaluate(
    directory: Path = typer.Argument(..., help="A dictionary directory or a training run directory."),
    model: str | None = typer.Option(None, "--model", help="Model (default: the dictionary's model_name)."),
    hook: str | None = typer.Option(None, "--hook", help="Hook to splice at (default: the dictionary's)."),
    corpus: str = typer.Option("stdlib-docs", "--corpus", help="Corpus of the held-out text."),
    split: str = typer.Option("val", "--split", help="val | train."),
    n_seq: int = typer.Option(16, "--n-seq", min=1, help="Sequences evaluated."),
    seq_len: int = typer.Option(128, "--seq-len", min=1, help="Tokens per sequence."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Sequences per forward pass."),
    tokenizer: str = typer.Option("auto", "--tokenizer", help="auto | smollm2 | bytes."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Evaluate a dictionary spliced into the model: L0, MSE, FVU, CE loss recovered, KL, dead/dense."""
    import torch

    from mechscope.dictionaries.evals import EvalConfig, evaluate_many
    from mechscope.experiments.dictionaries.run import eval_tokens, load_dictionary_dir

    with fail_cleanly():
        d = load_dictionary_dir(directory)
        name = model or d.cfg.model_name
        if name is None:
            raise ConfigError("the dictionary does not record its model; pass --model")
        m = load_model(name)
        with torch.inference_mode():
            toks = eval_tokens(m, corpus, split=split, n_seq=n_seq, seq_len=seq_len, tokenizer=tokenizer)
            res = evaluate_many(m, [d], toks, hooks=[hook], cfg=EvalConfig(batch_size=batch_size))[0]
    summary = {k: getattr(res, k) for k in EVAL_KEYS} | {
        "ce_loss_clean": res.ce_loss_clean, "ce_loss_spliced": res.ce_loss_spliced,
        "ce_loss_zero": res.ce_loss_zero, "n_tokens": res.n_tokens, "hook": hook or d.cfg.hook_name,
        "reads": list(res.reads), "writes": list(res.writes)}
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
    else:
        for key, v in summary.items():
            typer.echo(f"{key:>18}  {v:.4f}" if isinstance(v, float) else f"{key:>18}  {v}")


@app.command()
def archs() -> None:
    """List the registered dictionary architectures."""
    from mechscope.dictionaries.registry import architectures

    typer.echo("\n".join(architectures()))


@app.command()
def study(
    store: Path = typer.Option(Path("runs/dictionaries/acts-l15"), "--store", help="Harvested store."),
    out: Path = typer.Option(Path("runs/dictionaries/study"), "--out", help="Runs and results.json."),
    model: str = typer.Option("smollm2-135m", "--model", help="Model the store was harvested from."),
    d_sae: int = typer.Option(2304, "--d-sae", min=1, help="Latents per dictionary."),
    batch_size: int = typer.Option(1024, "--batch-size", min=1, help="Tokens per step."),
    epochs: int = typer.Option(1, "--epochs", min=1, help="Passes over the store per run."),
    eval_seqs: int = typer.Option(8, "--eval-seqs", min=1, help="Held-out sequences of 128 tokens."),
    corpus: str = typer.Option("stdlib-docs", "--corpus", help="Corpus whose validation split is evaluated "
                               "(the store's corpus)."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate."),
    precision: str = typer.Option("float32", "--precision", help="float32 | bfloat16 (autocast training)."),
    figure: Path | None = typer.Option(None, "--figure", help="Write the Pareto picture (PNG) here."),
) -> None:
    """Train every variant at 3 sparsity levels on one store, evaluate them spliced in (resumable)."""
    from mechscope.experiments.dictionaries.report import pareto_figure
    from mechscope.experiments.dictionaries.run import StudyConfig, run_study
    from mechscope.viz.report import save_figure

    with fail_cleanly():
        cfg = StudyConfig(store=str(store), out=str(out), d_sae=d_sae, batch_size=batch_size, epochs=epochs,
                          eval_seqs=eval_seqs, corpus=corpus, lr=lr, precision=precision)
        rows = run_study(cfg, load_model(model))
    if figure is not None:
        save_figure(pareto_figure(rows), figure)
    for r in rows:
        typer.echo(json.dumps({k: r[k] for k in ("arch", "option", "value", *EVAL_KEYS, "train_seconds")}))


from mechscope.cli import dict_scale  # noqa: E402,F401  (registers `dict stream`, `dict scaling`, `dict splits`)
