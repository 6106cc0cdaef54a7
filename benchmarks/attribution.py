"""Attribution benchmarks on SmolLM2 (prints JSON).

``--part ig``: our integrated gradients (all steps in one batched forward + backward through ``hook_embed``,
only the readout position unembedded) vs captum's ``IntegratedGradients`` and ``LayerIntegratedGradients``
on the same inputs, baseline and steps; max |Δ| of the attributions and the time ratio.
``--part graph``: attribution-graph time and peak memory vs prompt length (needs ``--transcoders DIR``).

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["ig", "graph"], default="ig")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--transcoders", default=None)
    ap.add_argument("--lengths", default="16,64,256")
    args = ap.parse_args()
    out: dict[str, object] = {"machine": machine()}
    if args.part == "ig":
        out["ig"] = bench_ig(args.steps, args.repeats)
    else:
        from graph_bench import bench_graph  # type: ignore[import-not-found]

        out["graph"] = bench_graph(args.transcoders, [int(x) for x in args.lengths.split(",")])
    emit(out)


if __name__ == "__main__":
    main()
