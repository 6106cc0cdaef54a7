"""``mechscope dict stream``: train straight from the model (no store) — registered on the ``dict`` group.

    mechscope dict stream --model smollm2-135m --hooks blocks.15.hook_resid_post --tokens 1000000 \\
        --arch topk --k 32 --d-sae 4608 --out runs/topk-stream [--spill acts/]
    mechscope dict stream --model smollm2-135m --arch clt --hooks all --k 8 --d-sae 128 --model-dtype bfloat16 \
        --skip --tokens 131072 --batch-size 1024 --buffer-rows 4096 --out runs/clt   # a CLT over every MLP

Under ``torchrun`` the same command deals the forward passes over the ranks (rows all-gathered) and trains
data parallel; with ``--distribute-hooks`` each rank trains its share of the hooks' dictionaries instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from mechscope.cli.common import fail_cleanly, load_model
from mechscope.cli.dict_app import app
from mechscope.errors import ConfigError


@app.command()
def stream(
    model: str = typer.Option("smollm2-135m", "--model", help="Model name or path for mechscope.load."),
    hooks: str = typer.Option(..., "--hooks", help="Comma-separated hooks the dictionary reads (transcoder: input,"
                              "target; crosscoder: several; clt: n inputs then n targets, or `all` for every "
                              "MLP's ln2.hook_normalized then hook_mlp_out)."),
    tokens: int = typer.Option(..., "--tokens", help="Activation rows streamed (one pass)."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, metrics.jsonl, dictionary/)."),
    arch: str = typer.Option("topk", "--arch", help="Any registered architecture (`mechscope dict archs`)."),
    d_sae: int = typer.Option(4608, "--d-sae", help="Number of latents."),
    k: int | None = typer.Option(None, "--k", help="Active latents (topk, batchtopk, matryoshka, transcoder)."),
    l1: float | None = typer.Option(None, "--l1", help="L1 coefficient (relu, gated, crosscoder, transcoder)."),
    normalize: str = typer.Option("expected_norm", "--normalize", help="expected_norm | none."),
    skip: bool = typer.Option(False, "--skip", help="Add a linear skip (transcoder, clt): a skip transcoder."),
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
    model_dtype: str = typer.Option("float32", "--model-dtype", help="float32 | bfloat16: run the model in this dtype "
                                    "(rows are cast to float32 for training)."),
    spill: Path | None = typer.Option(None, "--spill", help="Also write the streamed rows to a new store here."),
    shard_rows: int = typer.Option(65536, "--shard-rows", help="Rows per shard of the --spill store."),
    no_estimate: bool = typer.Option(False, "--no-estimate", help="Skip the size/RAM/speed estimate and its check."),
    distribute_hooks: bool = typer.Option(False, "--distribute-hooks", help="One dictionary per hook in "
                                          "OUT/<hook>/; under torchrun each rank trains its share of the hooks."),
) -> None:
    """Train a dictionary on activations streamed from the model through the mixing buffer (no harvest)."""
    import torch

    from mechscope.distributed import init_from_env
    from mechscope.experiments.dictionaries.run import clt_hook_names
    from mechscope.experiments.scale import corpus_source
    from mechscope.experiments.streaming import train_hooks_streaming, train_streaming

    hook_list = [h.strip() for h in hooks.split(",") if h.strip()]
    options: dict[str, object] = {"k": k, "l1_coefficient": l1, "normalize_activations": normalize, "seed": seed,
                                  "skip": skip or None}
    if arch == "crosscoder":
        options["hook_names"] = tuple(hook_list)
    with fail_cleanly():
        sync = init_from_env()
        if model_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"--model-dtype must be float32 or bfloat16, got {model_dtype!r}")
        if distribute_hooks and (arch in ("crosscoder", "transcoder") or spill is not None):
            raise ConfigError("--distribute-hooks trains one single-hook dictionary per hook: not with --arch "
                              f"{arch} or --spill")
        if hook_list == ["all"] and arch != "clt":
            raise ConfigError("--hooks all is the CLT preset (every MLP's input and output); use it with --arch clt")
        m = load_model(model).to(getattr(torch, model_dtype))
        if hook_list == ["all"]:
            hook_list = clt_hook_names(m.cfg.n_layers)
        src = corpus_source(m, hook_list, corpus=corpus, seq_len=seq_len, batch_size=seq_batch, tokenizer=tokenizer,
                            seed=seed)
        with torch.inference_mode(False):
            if distribute_hooks:
                runs = train_hooks_streaming(src, out, arch, n_tokens=tokens, d_sae=d_sae, options=options,
                                             batch_size=batch_size, steps=steps, lr=lr, buffer_rows=buffer_rows,
                                             seed=seed, precision=precision, model_name=model, sync=sync,
                                             progress=sync.is_writer)
                if sync.is_writer:
                    typer.echo(json.dumps({"out": str(out), "runs": {h: str(p) for h, p in runs.items()},
                                           "world_size": sync.world_size}))
                return
            d = train_streaming(src, out, arch, n_tokens=tokens, d_sae=d_sae, options=options, batch_size=batch_size,
                                steps=steps, lr=lr, buffer_rows=buffer_rows, seed=seed, precision=precision,
                                spill=spill, shard_rows=shard_rows, model_name=model, estimate=not no_estimate,
                                sync=sync, progress=sync.is_writer)
    if sync.is_writer:
        typer.echo(json.dumps({"out": str(out / "dictionary"), "arch": d.cfg.architecture, "d_in": d.cfg.d_in,
                               "d_sae": d.cfg.d_sae, "hook": d.cfg.hook_name, "world_size": sync.world_size,
                               "n_layers": getattr(d.cfg, "n_layers", None),
                               "spill": None if spill is None else str(spill)}))


def _ints(text: str, what: str) -> list[int]:
    try:
        vals = [int(float(v)) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise ConfigError(f"{what} must be comma-separated numbers, got {text!r}") from e
    if not vals or min(vals) <= 0:
        raise ConfigError(f"{what} must be positive numbers, got {text!r}")
    return vals


@app.command()
def scaling(
    results: Path | None = typer.Option(None, "--results", help="Fit an existing sweep's results.json (no training)."),
    store: Path | None = typer.Option(None, "--store", help="Harvested store to train the sweep on."),
    out: Path = typer.Option(Path("runs/scaling"), "--out", help="Sweep directory (runs are reused when rerun)."),
    model: str = typer.Option("smollm2-135m", "--model", help="Model for the held-out rows (validation split)."),
    hook: str | None = typer.Option(None, "--hook", help="Hook (default: the store's first)."),
    widths: str = typer.Option("512,1024,2048", "--widths", help="Comma-separated dictionary widths."),
    tokens: str = typer.Option("50000,100000,200000", "--tokens", help="Comma-separated training tokens."),
    k: int = typer.Option(32, "--k", help="TopK active latents."),
    batch_size: int = typer.Option(1024, "--batch-size", help="Tokens per step."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate."),
    eval_rows: int = typer.Option(8192, "--eval-rows", help="Held-out rows every run is evaluated on."),
    corpus: str = typer.Option("stdlib-docs", "--corpus", help="Corpus of the held-out rows."),
    precision: str = typer.Option("float32", "--precision", help="float32 | bfloat16."),
    bootstrap: int = typer.Option(200, "--bootstrap", help="Bootstrap resamples for the CIs."),
    figure: Path | None = typer.Option(None, "--figure", help="Write loss-vs-compute and loss-vs-width (PNG) here."),
    with_splits: bool = typer.Option(False, "--splits", help="Also match latents across consecutive widths."),
    seed_per_width: bool = typer.Option(False, "--seed-per-width", help="Initialise each width from its own seed "
                                        "(needed for --splits: a shared seed makes wider decoders start with the "
                                        "narrower one's rows)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Width x tokens sweep of TopK SAEs and the fitted scaling laws (exponents with confidence intervals)."""
    from mechscope.dictionaries.scaling import scaling_summary

    with fail_cleanly():
        if results is not None:
            rows = json.loads(Path(results).read_text())
            d_in = int(rows[0].get("d_in", 1)) if rows else 1  # compute's constant; exponents do not depend on it
        else:
            if store is None:
                raise ConfigError("give --store (to run the sweep) or --results (to fit a finished one)")
            import torch

            from mechscope.activations.store import ActivationStore
            from mechscope.experiments.scaling.run import held_out_rows, run_sweep

            st = ActivationStore.open(store)
            h = hook or st.hooks[0]
            d_in = int(st.manifest["hooks"][h][-1])
            # held-out rows from the model in the dtype the store was harvested with (same distribution)
            dtype = st.manifest["metadata"].get("source", {}).get("metadata", {}).get("model_dtype", "float32")
            m = load_model(model).to(getattr(torch, dtype if dtype in ("float32", "bfloat16") else "float32"))
            with torch.inference_mode():
                held, ids = held_out_rows(m, h, corpus=corpus, n_rows=eval_rows)
            held = held.clone()
            rows = run_sweep(store, out, held, widths=_ints(widths, "--widths"), tokens=_ints(tokens, "--tokens"),
                             k=k, batch_size=batch_size, lr=lr, precision=precision, progress=not as_json,
                             seed_per_width=seed_per_width)
        summary = scaling_summary(rows, d_in, n_boot=bootstrap)
        if results is None and with_splits:
            from mechscope.experiments.dictionaries.run import load_dictionary_dir
            from mechscope.experiments.scaling.run import splits

            tok = getattr(m, "tokenizer", None)
            ws = sorted({r["width"] for r in rows})
            shared = [t for t in {r["tokens"] for r in rows} if all(any(r["width"] == w and r["tokens"] == t
                                                                        for r in rows) for w in ws)]
            top_t = max(shared) if shared else max(r["tokens"] for r in rows)  # every width trained as long
            summary["splits_tokens"] = top_t
            runs = {r["width"]: r["run"] for r in rows if r["tokens"] == top_t}
            summary["splits"] = [{"small": a, "large": b} | splits(
                load_dictionary_dir(out / runs[a]), load_dictionary_dir(out / runs[b]), held, ids,
                decode=tok.to_string if tok is not None else None) for a, b in zip(ws, ws[1:]) if a in runs and b in runs]
        if results is None:
            (out / "summary.json").write_text(json.dumps(summary, indent=1))
        if figure is not None:
            from mechscope.viz.report import save_figure

            save_figure(_scaling_figure(rows, summary), figure)
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
    else:
        s = summary["surface"]
        typer.echo(f"L(N, D) = {s['E']:.4f} + {s['A']:.3g}/N^{s['alpha']:.3f} + {s['B']:.3g}/D^{s['beta']:.3f}  "
                   f"alpha CI {s['alpha_ci']}, beta CI {s['beta_ci']}; N_opt ~ C^{s['width_exponent']:.3f} "
                   f"CI {s['width_exponent_ci']}")


def _scaling_figure(rows: list[dict[str, float]], summary: dict[str, object]) -> object:
    from mechscope.viz.report import new_figure

    fig = new_figure(15, 4)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    d_in = int(summary["d_in"])  # type: ignore[call-overload]
    for w in sorted({r["width"] for r in rows}):
        pts = sorted((r for r in rows if r["width"] == w), key=lambda r: r["tokens"])
        ax1.plot([6 * r["tokens"] * w * d_in for r in pts], [r["loss"] for r in pts], marker="o", label=f"N={w}")
    front = summary["frontier"]
    ax1.plot([r["compute"] for r in front], [r["loss"] for r in front], "k--", alpha=0.5, label="frontier")  # type: ignore[attr-defined]
    ax1.set(xscale="log", yscale="log", xlabel="compute (6·D·N·d_in FLOPs)", ylabel="held-out FVU")
    ax1.legend(fontsize=7)
    for t in sorted({r["tokens"] for r in rows}):
        pts = sorted((r for r in rows if r["tokens"] == t), key=lambda r: r["width"])
        ax2.plot([r["width"] for r in pts], [r["dead_fraction"] for r in pts], marker="o", label=f"D={t:,}")
    ax2.set(xscale="log", xlabel="width N (latents)", ylabel="dead fraction (held-out)")
    ax2.legend(fontsize=7)
    by_w = [r for r in summary.get("by_width", []) if r.get("freq_median")]  # type: ignore[attr-defined]
    if by_w:
        ws = [r["width"] for r in by_w]
        ax3.plot(ws, [r["freq_median"] for r in by_w], marker="o", label="median")
        ax3.fill_between(ws, [r["freq_p10"] for r in by_w], [r["freq_p90"] for r in by_w], alpha=0.2,
                         label="10th-90th percentile")
        ax3.set(xscale="log", yscale="log", xlabel="width N (latents)",
                ylabel="firing frequency of live latents (longest run)")
        ax3.legend(fontsize=7)
    return fig


@app.command("family")
def family_cmd(
    dictionaries: list[Path] = typer.Argument(..., help="Dictionary or run directories of one hook, two or more widths."),
    parent: list[str] = typer.Option(..., "--parent", help="WIDTH:LATENT, e.g. 512:261: that latent of the "
                                     "WIDTH-wide dictionary and its children in the next wider one given."),
    model: str = typer.Option("smollm2-135m", "--model", help="Model whose activations are encoded."),
    model_dtype: str = typer.Option("float32", "--model-dtype", help="float32 | bfloat16 (as the store was harvested)."),
    hook: str | None = typer.Option(None, "--hook", help="Hook (default: the first dictionary's)."),
    corpus: str = typer.Option("stdlib-docs", "--corpus", help="Corpus whose validation split is searched."),
    eval_rows: int = typer.Option(32768, "--eval-rows", help="Held-out tokens to search (whole 128-token sequences)."),
    threshold: float = typer.Option(0.5, "--threshold", help="Decoder cosine of a child to its parent."),
    examples: int = typer.Option(3, "--examples", help="Top contexts per latent."),
    left: int = typer.Option(10, "--left", help="Tokens shown before the activating token."),
    right: int = typer.Option(3, "--right", help="Tokens shown after it."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (default: markdown tables)."),
) -> None:
    """Max-activating contexts of split families: a small dictionary's latent and its children in a wider one."""
    import torch

    from mechscope.experiments.dictionaries.run import load_dictionary_dir
    from mechscope.experiments.scaling.contexts import family_contexts, family_markdown, held_out_sequences

    with fail_cleanly():
        if model_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"--model-dtype must be float32 or bfloat16, got {model_dtype!r}")
        if examples < 1 or left < 0 or right < 0 or eval_rows < 1:
            raise ConfigError("--examples and --eval-rows must be >= 1, --left and --right >= 0")
        ds = sorted((load_dictionary_dir(p) for p in dictionaries), key=lambda d: d.cfg.d_sae)
        widths = [d.cfg.d_sae for d in ds]
        pairs: list[tuple[int, int]] = []
        for spec in parent:
            w, _, lat = spec.partition(":")
            if not (w.isdigit() and lat.isdigit()) or int(w) not in widths[:-1]:
                raise ConfigError(f"--parent must be WIDTH:LATENT with WIDTH one of {widths[:-1]} (a wider "
                                  f"dictionary must be given too), got {spec!r}")
            pairs.append((widths.index(int(w)), int(lat)))
        h = hook or ds[0].cfg.hook_name
        if h is None:
            raise ConfigError("the dictionary does not record its hook; pass --hook")
        m = load_model(model).to(getattr(torch, model_dtype))
        with torch.inference_mode():
            rows, seqs, keep = held_out_sequences(m, h, corpus=corpus, n_rows=eval_rows)
        rows = rows.clone()
        tok = getattr(m, "tokenizer", None)
        fams = [family_contexts(ds[i], ds[i + 1], p, rows, seqs, keep, threshold=threshold, n_examples=examples,
                                left=left, right=right, decode=tok.to_string if tok is not None else None)
                for i, p in pairs]
    if as_json:
        typer.echo(json.dumps({"hook": h, "eval_rows": int(rows.shape[0]), "families": fams}, indent=1))
    else:
        typer.echo("\n".join(family_markdown(f) for f in fams))


@app.command("absorption")
def absorption_cmd(
    dictionaries: list[Path] = typer.Argument(..., help="Dictionary or run directories (same hook) to compare."),
    model: str = typer.Option("smollm2-135m", "--model", help="Model whose tokens and activations are probed."),
    hook: str | None = typer.Option(None, "--hook", help="Hook (default: the first dictionary's)."),
    corpus: str = typer.Option("stdlib-docs", "--corpus", help="Corpus whose validation split is used."),
    eval_rows: int = typer.Option(16384, "--eval-rows", help="Held-out rows (only first-letter word tokens count)."),
    cos_threshold: float = typer.Option(0.1, "--cos-threshold", help="Decoder-probe cosine of an absorbing latent."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Feature absorption on a first-letter task (probe + main latent per letter) for each dictionary."""
    import torch

    from mechscope.dictionaries.absorption import absorption, first_letters
    from mechscope.experiments.dictionaries.run import load_dictionary_dir
    from mechscope.experiments.scaling.run import held_out_rows

    with fail_cleanly():
        ds = [load_dictionary_dir(p) for p in dictionaries]
        h = hook or ds[0].cfg.hook_name
        if h is None:
            raise ConfigError("the dictionary does not record its hook; pass --hook")
        m = load_model(model)
        if getattr(m, "tokenizer", None) is None:
            raise ConfigError(f"{model} has no tokenizer; the first-letter task needs one")
        with torch.inference_mode():
            rows, ids = held_out_rows(m, h, corpus=corpus, n_rows=eval_rows)
        rows = rows.clone()
        letters = first_letters(ids, m.tokenizer.to_string)
        report: dict[str, Any] = {"hook": h, "eval_rows": eval_rows, "letter_rows": int((letters != "").sum()), "dictionaries": [
            {"path": str(p), "arch": d.cfg.architecture, "d_sae": d.cfg.d_sae}
            | absorption(d, rows, letters, cos_threshold=cos_threshold) for p, d in zip(dictionaries, ds)]}
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        for r in report["dictionaries"]:
            typer.echo(f"{r['arch']:>11} d_sae={r['d_sae']}: probe acc {r['probe_accuracy']:.3f}, main-latent F1 "
                       f"{r['mean_main_f1']:.3f}, false negatives {r['false_negative_rate']:.3f}, absorbed "
                       f"{r['absorption_rate']:.3f} ({r['letters']} letters, {r['rows']} rows)")
