"""Attribution benchmarks on SmolLM2 (prints JSON).

``--part ig``: our integrated gradients (all steps in one batched forward + backward through ``hook_embed``,
only the readout position unembedded) vs captum's ``IntegratedGradients`` and ``LayerIntegratedGradients``
on the same inputs, baseline and steps; max |Δ| of the attributions and the time ratio (wall and CPU seconds,
the load average), plus a matmul account: the FLOPs each needs (blocks forward + input-gradient backward on
``steps x tokens`` rows; captum also unembeds every position over the whole vocabulary, forward and backward),
the rate ours reaches, and a plain ``[rows d_model] @ [d_model d_mlp]`` matmul's rate in the same process.
``--part graph``: attribution-graph time and peak memory vs prompt length (needs ``--transcoders DIR``), each
length in a fresh process; ``--max-features`` caps the feature nodes (the rest join the error nodes) so that the
cost per target row is what grows with the length.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/attribution.py --part ig``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, machine, peak_rss_mb, timeit  # noqa: E402

PROMPT = "The Eiffel Tower is located in the city of"


def cpu_seconds(fn: object, repeats: int) -> float:
    """Median CPU seconds of ``fn()`` (this process; less sensitive to other processes' load than wall time)."""
    times = []
    for _ in range(repeats):
        c = time.process_time()
        fn()  # type: ignore[operator]
        times.append(time.process_time() - c)
    return statistics.median(times)


def matmul_rate(rows: int, d: int, h: int, repeats: int = 50) -> float:
    """GFLOP/s of a plain ``[rows d] @ [d h]`` float32 matmul (the machine's ceiling for the blocks' matmuls)."""
    a, b = torch.randn(rows, d), torch.randn(d, h)
    a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * rows * d * h * repeats / (time.perf_counter() - t) / 1e9


def bench_ig(steps: int, repeats: int) -> dict[str, object]:
    from captum.attr import IntegratedGradients, LayerIntegratedGradients

    import mechscope
    from mechscope.attribution.tokens import EmbedRunner, answer_metric, integrated_gradients

    model = mechscope.load("smollm2-135m").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tok = model.tokenizer
    tokens = tok.to_tokens(PROMPT)
    metric = answer_metric(tok.to_single_token(" Paris"))
    runner = EmbedRunner(model, tokens, metric, baseline=0)

    def ours() -> torch.Tensor:
        return integrated_gradients(runner, steps, "gausslegendre")

    def fwd_embeds(emb: torch.Tensor) -> torch.Tensor:
        toks = tokens.expand(emb.shape[0], -1)
        with model.hooks(fwd=[("hook_embed", lambda x, hook: emb)]):
            return metric(model(toks)[:, -1])

    ig = IntegratedGradients(fwd_embeds)
    emb = model.embed(tokens).detach()
    base = model.embed(torch.zeros_like(tokens)).detach()

    def captum_ig() -> torch.Tensor:
        return ig.attribute(emb, baselines=base, n_steps=steps, method="gausslegendre").sum(-1)[0]

    lig = LayerIntegratedGradients(lambda t: metric(model(t)[:, -1]), model.embed)

    def captum_lig() -> torch.Tensor:
        return lig.attribute(tokens, baselines=torch.zeros_like(tokens), n_steps=steps,
                             method="gausslegendre").sum(-1)[0]

    a, b, c = ours(), captum_ig(), captum_lig()
    load_before = os.getloadavg()
    t_ours, t_ig, t_lig = timeit(ours, repeats), timeit(captum_ig, repeats), timeit(captum_lig, repeats)
    cpu_ours, cpu_ig = cpu_seconds(ours, repeats), cpu_seconds(captum_ig, repeats)
    # a fixed first position (a BOS, the CLI's default) runs once through the KV cache: vs recomputing it
    r_fixed = EmbedRunner(model, tokens, metric, baseline=0, fixed=[0])
    r_nocache = EmbedRunner(model, tokens, metric, baseline=0, fixed=[0])
    r_nocache.prefix = 0
    cpu_prefix = cpu_seconds(lambda: integrated_gradients(r_fixed, steps), repeats)
    cpu_noprefix = cpu_seconds(lambda: integrated_gradients(r_nocache, steps), repeats)
    prefix_diff = float((integrated_gradients(r_fixed, steps) - integrated_gradients(r_nocache, steps)).abs().max())
    rows = steps * int(tokens.shape[1])
    block_params = sum(p.numel() for p in model.blocks.parameters() if p.dim() >= 2)
    gflop_ours = 2 * 2 * rows * block_params / 1e9  # forward + input-gradient backward
    gflop_unembed_all = 2 * 2 * rows * model.cfg.d_model * model.cfg.d_vocab / 1e9
    mlp = model.cfg.mlp.d_mlp if model.cfg.mlp is not None else 4 * model.cfg.d_model
    return {"prompt": PROMPT, "n_tokens": int(tokens.shape[1]), "n_steps": steps, "baseline": "token 0",
            "load_average_1m": [load_before[0], os.getloadavg()[0]],
            "cpu_s_ours": cpu_ours, "cpu_s_captum_ig": cpu_ig, "cpu_speedup_vs_captum_ig": cpu_ig / cpu_ours,
            "fixed_first_cpu_s_cached_prefix": cpu_prefix, "fixed_first_cpu_s_recomputed": cpu_noprefix,
            "fixed_first_max_abs_diff": prefix_diff, "gflop_ours": gflop_ours, "gflop_captum_ig": gflop_ours + gflop_unembed_all,
            "flop_bound_speedup_vs_captum_ig": (gflop_ours + gflop_unembed_all) / gflop_ours,
            "gflops_per_s_ours": gflop_ours / t_ours["median_s"],
            "gflops_per_s_plain_matmul": matmul_rate(rows, model.cfg.d_model, mlp),
            "ours_s": t_ours, "captum_ig_s": t_ig, "captum_layer_ig_s": t_lig,
            "speedup_vs_captum_ig": t_ig["median_s"] / t_ours["median_s"],
            "speedup_vs_captum_layer_ig": t_lig["median_s"] / t_ours["median_s"],
            "max_abs_diff_vs_captum_ig": float((a - b).abs().max()),
            "max_abs_diff_vs_captum_layer_ig": float((a - c).abs().max()),
            "max_abs_attribution": float(a.abs().max()), "peak_rss_mb": peak_rss_mb()}


TEXT = ("The history of the city begins with a small settlement on the river, where traders met to exchange "
        "grain, salt and cloth. Over the centuries the settlement grew into a market town, then a fortified city "
        "with walls, gates and a cathedral, and finally the capital of a large and prosperous region. ")


def graph_worker(transcoders: str, n_tokens: int, max_features: int, budget: float) -> dict[str, object]:
    """One graph in this (fresh) process: time, peak RSS, sizes and the memory estimate."""
    import time

    import mechscope
    from mechscope.attribution.export import load_transcoder_set
    from mechscope.attribution.graph import build_graph, graph_scores, prune

    model = mechscope.load("smollm2-135m").eval()
    tset = load_transcoder_set(transcoders)
    ids = model.tokenizer.to_tokens(TEXT * 8)[0][:n_tokens]
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    g = build_graph(model, ids, tset, max_features=max_features, memory_budget_mb=budget)
    t_graph = time.perf_counter() - t0
    pg = prune(g)
    return {"n_tokens": n_tokens, "n_active_features_capped": g.n_features, "n_nodes": g.n_nodes,
            "graph_s": t_graph, "peak_rss_mb": peak_rss_mb(), "rss_before_graph_mb": rss0,
            "estimate": g.extras["memory_estimate"], "batch": g.extras["batch_size"],
            "n_nodes_kept": int(pg.node_mask.sum()), **graph_scores(g)}


def bench_graph(transcoders: str, lengths: list[int], max_features: int, budget: float) -> list[dict[str, object]]:
    from _common import run_worker

    return [run_worker(sys.executable, __file__, ["--worker", "--transcoders", transcoders, "--n", str(n),
                                                  "--max-features", str(max_features), "--budget", str(budget)],
                       timeout=3600) for n in lengths]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["ig", "graph"], default="ig")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--transcoders", default=None)
    ap.add_argument("--lengths", default="16,64,256")
    ap.add_argument("--max-features", type=int, default=64)
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--budget", type=float, default=3000.0, help="memory_budget_mb of each graph")
    args = ap.parse_args()
    if args.worker:
        emit(graph_worker(args.transcoders, args.n, args.max_features, args.budget))
        return
    out: dict[str, object] = {"machine": machine()}
    if args.part == "ig":
        out["ig"] = bench_ig(args.steps, args.repeats)
    else:
        if args.transcoders is None:
            ap.error("--part graph needs --transcoders DIR")
        out["graph"] = bench_graph(args.transcoders, [int(x) for x in args.lengths.split(",")], args.max_features,
                                   args.budget)
    emit(out)


if __name__ == "__main__":
    main()
