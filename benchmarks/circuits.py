"""Benchmark: circuit discovery cost (JSON on stdout).

* SmolLM2-135M IOI graph (70,651 edges), ``--n-prompts`` prompts: wall and CPU (``process_time``) time of
  ``discover(method="eap")`` (default ``precision="auto"``, and ``eap:full`` = float32 contraction) and
  ``discover(method="eap-ig", steps=5, chunk=5)`` as multiples of one plain forward of the same batch
  (target: EAP <= 4x; each run is bracketed by forwards, the ratio uses their median; the load average
  before and after is recorded). Times include everything ``discover`` does (graph, corrupted forward,
  the gradient forward + backward per chunk of steps, the contraction).
* ACDC on a small random GPT-2-shaped model: batched (``chunk`` guesses per forward) vs the
  one-edge-at-a-time reference on the same graph and data; reports both times, forwards and whether the
  circuits and scores are identical (target >= 10x, same circuit).

Usage: ``python benchmarks/circuits.py [--threads 1] [--repeats 3] [--n-prompts 32] [--skip-smollm] [--skip-acdc]
[--methods eap,eap:full,eap-ig]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, peak_rss_mb, timeit  # noqa: E402


def _smollm(n_prompts: int, repeats: int, methods: list[str]) -> dict[str, Any]:
    import mechscope
    from mechscope.circuits.discover import discover
    from mechscope.experiments.circuits_ioi import ioi_task

    model = mechscope.load("smollm2-135m").eval()
    clean, corrupted, metric = ioi_task(model, n_prompts)

    def forward() -> None:
        with torch.no_grad():
            model(clean)

    def clocked(fn: Any) -> tuple[float, float]:
        """(wall, CPU) seconds: on the shared machine this process's CPU time is the steadier figure."""
        c, w = time.process_time(), time.perf_counter()
        fn()
        return time.perf_counter() - w, time.process_time() - c

    fwd = timeit(forward, repeats=repeats)
    out: dict[str, Any] = {"batch": list(clean.shape), "forward": fwd, "load_before": os.getloadavg()}
    # the shared machine's speed drifts: each discover run is bracketed by a forward and compared with those
    for name in methods:
        method, _, variant = name.partition(":")
        opts: dict[str, Any] = {"steps": 5, "chunk": 5} if method == "eap-ig" else {}
        if variant:
            opts["precision"] = variant
        runs, fwds = [], []
        for _ in range(max(1, repeats - 1)):
            fwds.append(clocked(forward))
            runs.append(clocked(lambda m=method, o=opts: discover(model, clean, corrupted, metric, method=m, **o)))
            fwds.append(clocked(forward))
        res: dict[str, Any] = {"options": opts}
        for i, clock in enumerate(("wall", "cpu")):
            med, fmed = statistics.median(r[i] for r in runs), statistics.median(f[i] for f in fwds)
            res[clock] = {"median_s": med, "min_s": min(r[i] for r in runs), "max_s": max(r[i] for r in runs),
                          "bracketing_forward_median_s": fmed, "x_forward": med / fmed}
        out[name] = res
    out["load_after"] = os.getloadavg()
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _acdc(threshold: float, chunk: int) -> dict[str, Any]:
    from mechscope.circuits.discover import discover
    from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig
    from mechscope.models.transformer import HookedTransformer

    cfg = ModelConfig(d_model=64, n_layers=3, d_vocab=100, n_ctx=32,
                      attention=AttentionConfig(n_heads=4, d_head=16, qkv_bias=True, out_bias=True),
                      mlp=MLPConfig(d_mlp=128, bias=True), norm=NormConfig(kind="layernorm"))
    model = HookedTransformer(cfg, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 100, (8, 12), generator=g)
    corrupted = torch.randint(0, 100, (8, 12), generator=g)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, 3] - logits[:, -1, 7]

    runs = {}
    for batched in (False, True):
        t = time.perf_counter()
        s = discover(model, clean, corrupted, metric, method="acdc", threshold=threshold, batched=batched, chunk=chunk)
        runs[batched] = (time.perf_counter() - t, s)
    (t_seq, seq), (t_bat, bat) = runs[False], runs[True]
    return {"n_edges": len(seq.graph.edges), "threshold": threshold, "chunk": chunk, "kept": len(seq.kept or ()),
            "sequential_s": t_seq, "batched_s": t_bat, "speedup": t_seq / t_bat,
            "forwards_sequential": seq.info["forwards"], "forwards_batched": bat.info["forwards"],
            "variants_batched": bat.info["variants"],
            "same_circuit": seq.kept == bat.kept, "scores_bit_identical": bool(torch.equal(seq.scores, bat.scores))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--threshold", type=float, default=0.005)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--skip-smollm", action="store_true")
    ap.add_argument("--skip-acdc", action="store_true")
    ap.add_argument("--methods", default="eap,eap:full,eap-ig",
                    help="comma-separated discover methods for SmolLM2, ':full' / ':bf16' picks the precision")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"machine": machine()}
    if not args.skip_acdc:
        out["acdc"] = _acdc(args.threshold, args.chunk)
    if not args.skip_smollm:
        out["smollm2_ioi"] = _smollm(args.n_prompts, args.repeats, args.methods.split(","))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
