"""Attribution benchmarks on SmolLM2 (prints JSON).

``--part ig``: our integrated gradients (all steps in one batched forward + backward through ``hook_embed``,
only the readout position unembedded) vs captum's ``IntegratedGradients`` and ``LayerIntegratedGradients``
on the same inputs, baseline and steps; max |Δ| of the attributions and the time ratio.
``--part graph``: attribution-graph time and peak memory vs prompt length (needs ``--transcoders DIR``), each
length in a fresh process; ``--max-features`` caps the feature nodes (the rest join the error nodes) so that the
cost per target row is what grows with the length.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/attribution.py --part ig``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, machine, peak_rss_mb, timeit  # noqa: E402

PROMPT = "The Eiffel Tower is located in the city of"


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
    t_ours, t_ig, t_lig = timeit(ours, repeats), timeit(captum_ig, repeats), timeit(captum_lig, repeats)
    return {"prompt": PROMPT, "n_tokens": int(tokens.shape[1]), "n_steps": steps, "baseline": "token 0",
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
