"""``mechscope probe``: linear probes, k-sparse probes, CCS and DAS from the command line (``--json`` everywhere)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mechscope.cli.common import fail_cleanly

app = typer.Typer(help="Probes and causal abstraction: linear, k-sparse, CCS, DAS.", no_args_is_help=True)

DATASETS_HELP = "facts | capitals | arith | compare (balanced offline true/false statements)"


def _threads(threads: int | None) -> None:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)


@app.command("linear")
def linear_cmd(
    model: str = typer.Option(..., "--model", help="A registered name (smollm2-135m), a .gguf file or a saved model."),
    dataset: str = typer.Option("facts", "--dataset", help=DATASETS_HELP),
    hook_kind: str = typer.Option("hook_resid_post", "--hook-kind", help="Probed at every layer: blocks.L.<kind>."),
    kind: str = typer.Option("logistic", "--kind", help="logistic | linear"),
    max_items: int | None = typer.Option(None, "--max-items", help="Use only the first N statements."),
    out: Path | None = typer.Option(None, "--out", help="Save the best layer's probe (config.json + safetensors) "
                                    "and the accuracy-by-layer figure here."),
    seed: int = typer.Option(0, "--seed"),
    threads: int | None = typer.Option(None, "--threads"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Probe whether a statement is true at its last token, at every layer (one pass), with control-task selectivity."""
    _threads(threads)
    with fail_cleanly():
        from mechscope.experiments.probing.run import truth_probe_sweep

        res = truth_probe_sweep(model, dataset, hook_kind=hook_kind, kind=kind, seed=seed, out=out,
                                max_items=max_items)
    typer.echo(json.dumps(res) if as_json else "\n".join(
        f"{r['hook']}: test {r['test']:.3f}  control {r['control_test']}  selectivity {r['selectivity']}"
        for r in res["rows"]))


@app.command("sparse")
def sparse_cmd(
    model: str = typer.Option("smollm2-135m", "--model", help="Model (its tokenizer must be SmolLM2's BPE for the corpus)."),
    corpus: str = typer.Option("python-docs", "--corpus", help="Corpus name or path (mechscope.data.corpus)."),
    max_documents: int | None = typer.Option(None, "--max-documents", help="Use only the first N documents."),
    ranking: str = typer.Option("mean_diff", "--ranking", help="mean_diff | f_stat | mutual_info | l1"),
    milp: bool = typer.Option(False, "--milp", help="Also solve the exact k-sparse probe (HiGHS) at each k <= 8."),
    dictionary: Path | None = typer.Option(None, "--dictionary", help="A saved dictionary (SAE) directory: probe "
                                           "its latents vs the same layer's MLP neurons vs PCA components at "
                                           "equal k (SAEBench's sparse probing) instead of sweeping every layer."),
    out: Path | None = typer.Option(None, "--out", help="Write the F1-vs-k figure here."),
    threads: int | None = typer.Option(None, "--threads"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """k-sparse probing of compound words ("context manager", ...) in the MLP neurons of every layer."""
    _threads(threads)
    with fail_cleanly():
        if dictionary is not None:
            from mechscope.experiments.sparse_dictionary.run import run as sparse_dictionary_run

            if milp:
                from mechscope.errors import ConfigError

                raise ConfigError("--milp is for the neuron sweep; it cannot be combined with --dictionary")
            res = sparse_dictionary_run(model, dictionary, corpus=corpus, max_documents=max_documents,
                                        ranking=ranking, out=out)
        else:
            from mechscope.experiments.compound_words.run import run

            res = run(model, corpus=corpus, max_documents=max_documents, ranking=ranking, milp=milp, out=out)
    typer.echo(json.dumps(res) if as_json else "\n".join(
        f"{r['feature']}: layer {r['layer']} F1@k {r['f1_at_k']}" for r in res["results"]))


@app.command("ccs")
def ccs_cmd(
    model: str = typer.Option(..., "--model", help="A registered name (smollm2-135m), a .gguf file or a saved model."),
    dataset: str = typer.Option("facts", "--dataset", help=DATASETS_HELP),
    seed: int = typer.Option(0, "--seed"),
    restarts: int = typer.Option(10, "--restarts", help="CCS random restarts."),
    epochs: int = typer.Option(1000, "--epochs", help="CCS full-batch steps."),
    max_items: int | None = typer.Option(None, "--max-items", help="Use only the first N statements."),
    out: Path | None = typer.Option(None, "--out", help="Write the accuracy-by-layer figure here."),
    threads: int | None = typer.Option(None, "--threads"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """CCS vs logistic regression vs zero-shot vs a random direction, per layer (held-out accuracies)."""
    _threads(threads)
    with fail_cleanly():
        from mechscope.cli.common import load_model
        from mechscope.experiments.truth.run import ccs_figure, ccs_study

        m = load_model(model)
        if getattr(m, "tokenizer", None) is None:
            from mechscope.errors import ConfigError

            raise ConfigError(f"{model} has no tokenizer; CCS reads text prompts")
        res = ccs_study(m, dataset, seed=seed, restarts=restarts, epochs=epochs, max_items=max_items)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            ccs_figure([res]).savefig(out / f"ccs_{dataset}.png", dpi=110)
    typer.echo(json.dumps(res) if as_json else
               f"{dataset} (n={res['n']}), layer {res['layer']}: ccs {res['ccs']}, logistic {res['logistic']}, "
               f"zero-shot {res['zero_shot']}, random {res['random']}")


@app.command("das")
def das_cmd(
    run_dir: Path | None = typer.Argument(None, metavar="[RUN]", help="--task grokking: a run directory made by "
                                          "`mechscope grokking train` (e.g. --preset quick)."),
    task: str = typer.Option("hierarchical-equality", "--task", help="hierarchical-equality | grokking RUN | ioi"),
    layers: str | None = typer.Option(None, "--layers", help="Comma-separated layers (default: the task's; "
                                      "hierarchical-equality: all hidden layers, ioi: 8,14,20,24)."),
    dims: int | None = typer.Option(None, "--dims", help="Rotated coordinates per variable (default: the task's; "
                                    "grokking: 2 x the key frequencies)."),
    model: str = typer.Option("smollm2-135m", "--model", help="--task ioi: the language model."),
    n_prompts: int = typer.Option(64, "--n-prompts", help="--task ioi: prompts (half ABBA, half BABA)."),
    positions: str | None = typer.Option(None, "--positions", help="--task ioi: comma-separated positions among "
                                         "S2, end, IO, S1 (default S2,end)."),
    seed: int = typer.Option(0, "--seed"),
    out: Path | None = typer.Option(None, "--out", help="Write the IIA-by-layer figure here."),
    threads: int | None = typer.Option(None, "--threads"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Distributed alignment search: align the task's high-level variables, report IIA vs a random rotation."""
    _threads(threads)
    with fail_cleanly():
        from mechscope.errors import ConfigError

        tasks = ("hierarchical-equality", "grokking", "ioi")
        if task not in tasks:
            raise ConfigError(f"--task {task!r} is unknown; choose one of {', '.join(tasks)}")
        if (run_dir is not None) != (task == "grokking"):
            raise ConfigError("--task grokking needs a RUN directory argument, and only it takes one")
        sel = [int(v) for v in layers.split(",")] if layers else None
        if task == "grokking":
            from mechscope.experiments.grokking_das.run import iia_figure as grokking_figure
            from mechscope.experiments.grokking_das.run import run as grokking_das_run

            assert run_dir is not None
            res = grokking_das_run(run_dir, dims=dims, seed=seed)
            fig_name, fig = "das_grokking.png", grokking_figure
        elif task == "ioi":
            import dataclasses

            from mechscope.cli.common import load_model
            from mechscope.experiments.ioi_das.run import IOIDASConfig
            from mechscope.experiments.ioi_das.run import iia_figure as ioi_figure
            from mechscope.experiments.ioi_das.run import run as ioi_das_run

            cfg = IOIDASConfig(n_prompts=n_prompts, seed=seed)
            cfg = dataclasses.replace(cfg, dims=dims or cfg.dims, layers=tuple(sel) if sel else cfg.layers,
                                      positions=tuple(positions.split(",")) if positions else cfg.positions)
            res = ioi_das_run(load_model(model), cfg)
            fig_name, fig = "das_ioi.png", ioi_figure
        else:
            from mechscope.experiments.equality.run import EqualityConfig, iia_figure, run

            cfg_eq = EqualityConfig(seed=seed) if dims is None else EqualityConfig(seed=seed, dims=dims)
            res = run(cfg_eq, sel)
            fig_name, fig = "das_iia_by_layer.png", iia_figure
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            fig(res).savefig(out / fig_name, dpi=110)
    typer.echo(json.dumps(res) if as_json else
               f"{task}: best {res.get('hook', res.get('layer'))}: IIA {res['iia']} (random rotation "
               f"{res['iia_random_rotation']}), subspace {res['subspace_dim']} per variable")
