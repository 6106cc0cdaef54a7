"""``mechscope attribute``: attribution graphs (transcoders) and input-token attributions.

    mechscope attribute graph --model M --prompt TEXT --transcoders DIR --json --out DIR
    mechscope attribute tokens --model M --prompt TEXT --answer TOKEN [--wrong TOKEN] --method ig|shapley|lime|patch --json
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import typer

from mechscope.cli.common import fail_cleanly

app = typer.Typer(help="Attribution graphs through transcoders, QK attribution, token attributions.",
                  no_args_is_help=True, add_completion=False)


@app.command()
def graph(
    model: str = typer.Option("smollm2-135m", "--model", help="Model name or path for mechscope.load."),
    prompt: str = typer.Option(..., "--prompt", help="The prompt (a BOS is prepended as the tokenizer does)."),
    transcoders: Path = typer.Option(..., "--transcoders", help="A CLT directory, or a directory of per-layer "
                                     "transcoder directories (e.g. `dict train` runs)."),
    out: Path | None = typer.Option(None, "--out", help="Write graph.json and graph.svg here."),
    node_threshold: float = typer.Option(0.8, "--node-threshold", help="Share of logit influence kept in nodes."),
    edge_threshold: float = typer.Option(0.98, "--edge-threshold", help="Share kept in edges."),
    max_features: int | None = typer.Option(None, "--max-features", help="Cap on feature nodes (rest -> errors)."),
    budget: float = typer.Option(4096.0, "--memory-budget-mb", help="Refuse prompts whose graph would not fit."),
    batch_size: int = typer.Option(64, "--batch-size", help="Target rows per backward batch."),
    qk: bool = typer.Option(True, "--qk/--no-qk", help="QK attribution of the main attention edge."),
    qk_edges: int = typer.Option(8, "--qk-edges", help="Also store the QK attribution of this many strongest "
                                 "cross-position edges in graph.json (the web app shows it on click)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Attribution graph of one prompt through the local replacement model."""
    with fail_cleanly():
        import torch

        from mechscope.attribution.codes import layer_codes
        from mechscope.attribution.export import graph_json, load_transcoder_set
        from mechscope.attribution.graph import build_graph, check_budget, prune
        from mechscope.attribution.qk import main_attention_edge, qk_attribution
        from mechscope.attribution.qk_edges import qk_edges_json
        from mechscope.attribution.svg import graph_svg, write_svg
        from mechscope.cli.common import load_model
        from mechscope.dictionaries.io import atomic_write_json

        t0 = time.perf_counter()
        tset = load_transcoder_set(transcoders)
        m = load_model(model)
        tok = m.tokenizer
        tokens = tok.to_tokens(prompt)[0]
        check_budget(m, int(tokens.shape[0]), budget)
        g = build_graph(m, tokens, tset, memory_budget_mb=budget, batch_size=batch_size, max_features=max_features)
        pg = prune(g, node_threshold, edge_threshold)
        str_tokens = tok.to_str_tokens(tokens)
        logit_strs = [tok.to_string([int(t)]) for t in g.logit_tokens]
        data = graph_json(g, pg, str_tokens, logit_strs)
        if qk:
            edge = main_attention_edge(m, tokens, g, pg)
            if edge is not None:
                data["qk_main_edge"] = qk_attribution(m, tokens, tset, *edge).to_json()
            data["qk_edges"] = qk_edges_json(m, tokens, tset, g, pg, qk_edges)
        # which hook each layer's features read: the web app labels them from a feature set harvested there
        data["read_hooks"] = {str(lc.layer): lc.read_hook for lc in layer_codes(m, tset)}
        data["wall_seconds"] = time.perf_counter() - t0
        data["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / "graph.json", data)
            write_svg(out / "graph.svg", graph_svg(g, pg, str_tokens, logit_strs, title=prompt))
        keys = ["n_active_features", "n_nodes_kept", "n_edges_kept", "replacement_score", "completeness_score",
                "top_logits", "wall_seconds", "peak_rss_mb"]
        summary: dict[str, Any] = {k: data[k] for k in keys}
        summary["top_paths"] = data["top_paths"][:3]
        if "qk_main_edge" in data:
            summary["qk_main_edge"] = data["qk_main_edge"]
        del torch
        if as_json:
            typer.echo(json.dumps(summary, indent=1))
        else:
            typer.echo(f"{summary['n_active_features']} active features; kept {summary['n_nodes_kept']} nodes, "
                       f"{summary['n_edges_kept']} edges; replacement {summary['replacement_score']:.3f}, "
                       f"completeness {summary['completeness_score']:.3f}")


@app.command()
def tokens(
    model: str = typer.Option("smollm2-135m", "--model", help="Model name or path for mechscope.load."),
    prompt: str = typer.Option(..., "--prompt", help="The prompt."),
    answer: str = typer.Option(..., "--answer", help="Answer token, e.g. ' Paris' (must be one token)."),
    wrong: str | None = typer.Option(None, "--wrong", help="Wrong token: attribute logit(answer) - logit(wrong)."),
    method: str = typer.Option("ig", "--method", help="ig | shapley | lime | patch."),
    steps: int = typer.Option(32, "--steps", help="IG steps (Gauss-Legendre)."),
    samples: int | None = typer.Option(None, "--samples", help="Shapley orders / LIME samples."),
    baseline: int | None = typer.Option(None, "--baseline-token", help="Baseline token id (default: zero embedding)."),
    seed: int = typer.Option(0, "--seed", help="Seed of Shapley / LIME sampling."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Which input tokens the answer's logit depends on (BOS, if prepended, is held fixed)."""
    with fail_cleanly():
        from mechscope.attribution.tokens import METHODS, answer_metric, attribute_tokens, single_token
        from mechscope.cli.common import load_model
        from mechscope.errors import ConfigError

        if method not in METHODS:
            raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
        m = load_model(model)
        tok = m.tokenizer
        a = single_token(tok, answer, "--answer")
        w = single_token(tok, wrong, "--wrong") if wrong is not None else None
        ids = tok.to_tokens(prompt)[0]
        fixed = [0] if tok.bos_token_id is not None and int(ids[0]) == tok.bos_token_id else []
        res = attribute_tokens(m, ids, answer_metric(a, w), method, baseline=baseline, fixed=fixed,
                               n_steps=steps, n_samples=samples, seed=seed)
        data = res.to_json(tok.to_str_tokens(ids))
        if as_json:
            typer.echo(json.dumps(data, indent=1))
        else:
            for t, v in zip(data["tokens"], data["attributions"]):
                typer.echo(f"{t!r:>16} {v:+.4f}")


@app.command()
def compare(
    model: str = typer.Option("smollm2-135m", "--model", help="Model name or path for mechscope.load."),
    out: Path | None = typer.Option(None, "--out", help="Write compare.json here."),
    steps: int = typer.Option(32, "--steps", help="IG steps."),
    shapley_samples: int = typer.Option(16, "--shapley-samples", help="Shapley orders."),
    lime_samples: int = typer.Option(128, "--lime-samples", help="LIME samples."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (the summary table)."),
) -> None:
    """IG / Shapley / LIME vs embedding patching on IOI and factual-recall prompts (rank correlations)."""
    with fail_cleanly():
        from mechscope.attribution.study import compare_methods
        from mechscope.cli.common import load_model
        from mechscope.dictionaries.io import atomic_write_json

        m = load_model(model)
        res = compare_methods(m, n_steps=steps, shapley_samples=shapley_samples, lime_samples=lime_samples)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / "compare.json", res)
        if as_json:
            typer.echo(json.dumps(res["table"], indent=1))
        else:
            for r in res["table"]:
                typer.echo(f"{r['task']:>6} {r['method']:>8}  spearman {r['mean_spearman_vs_patch']:+.3f}  "
                           f"top1 {r['top1_agreement']:.2f}")


@app.command()
def fidelity(
    model: str = typer.Option("smollm2-135m", "--model", help="Model name or path for mechscope.load."),
    transcoders: Path = typer.Option(..., "--transcoders", help="CLT or per-layer transcoder directories."),
    corpus: str = typer.Option("stdlib-docs", "--corpus", help="Corpus of the held-out text."),
    n_seq: int = typer.Option(8, "--n-seq", help="Held-out sequences."),
    seq_len: int = typer.Option(128, "--seq-len", help="Tokens per sequence."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """NMSE per layer and CE loss recovered of the full replacement on held-out text."""
    with fail_cleanly():
        from mechscope.attribution.export import load_transcoder_set
        from mechscope.attribution.fidelity import replacement_fidelity
        from mechscope.cli.common import load_model
        from mechscope.experiments.dictionaries.run import eval_tokens

        tset = load_transcoder_set(transcoders)
        m = load_model(model)
        toks = eval_tokens(m, corpus, split="val", n_seq=n_seq, seq_len=seq_len)
        res = replacement_fidelity(m, tset, toks)
        if as_json:
            typer.echo(json.dumps(res, indent=1))
        else:
            typer.echo(f"CE recovered {res['ce_recovered']:.3f} (CE {res['ce_clean']:.3f} clean, "
                       f"{res['ce_replaced']:.3f} replaced, {res['ce_ablated']:.3f} ablated); NMSE {res['nmse']}")
            for note in res["warnings"]:
                typer.echo(f"warning: {note}")


@app.command()
def svg(
    graph_json: Path = typer.Argument(..., help="A graph.json written by `attribute graph --out`."),
    out: Path = typer.Option(..., "--out", help="The SVG file to write."),
    max_edges: int | None = typer.Option(None, "--max-edges", min=1, help="Draw only the strongest edges."),
    title: str = typer.Option("", "--title", help="Title line."),
) -> None:
    """Redraw a saved graph as a static SVG (e.g. with fewer edges than the pruned graph keeps)."""
    with fail_cleanly():
        from mechscope.attribution.svg import json_svg, write_svg
        from mechscope.dictionaries.io import read_json
        from mechscope.errors import ConfigError

        data = read_json(graph_json)
        if "nodes" not in data or "edges" not in data or "tokens" not in data:
            raise ConfigError(f"{graph_json} is not a graph.json of `attribute graph` (needs nodes, edges, tokens)")
        write_svg(out, json_svg(data, title=title, max_edges=max_edges))
        typer.echo(str(out))
