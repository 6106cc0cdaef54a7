"""Forward-pass and caching speed: mechscope vs HF transformers (SmolLM2) and vs TransformerLens (GPT-2 shape).

Each workload runs in a fresh process (clean peak memory), 2 torch threads, medians of 5 after a warm-up.
SmolLM2 rows come in float32 and bfloat16, each with its achieved GFLOP/s (forward FLOPs: 2·params·tokens
for every linear layer incl. the unembedding, plus attention's 4·batch·n_heads·pos²·d_head) next to the
``torch.mm`` GFLOP/s measured in the same run on the model's own matmul shapes: ``mm_peak_gflops`` is the
best of them, ``mm_floor_s`` the time the forward's matmuls alone take at the measured speeds. Because the
machine is shared, ``smollm2_interleaved`` also runs both libraries in ONE process, alternating calls
(median and min of 7 rounds each): the fairest ratio under background load. ``load_avg`` is recorded.
TransformerLens runs in the side environment built by ``../shared/peers/setup_venv.sh /tmp/peers-venv``
(override with MECHSCOPE_PEERS_PYTHON); without it those rows say so.

    .venv/bin/python benchmarks/forward.py            # prints one JSON object
    .venv/bin/python benchmarks/forward.py --only-smollm2 --threads 1   # steadier on a loaded machine
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import PEERS_PY, emit, machine, peak_rss_mb, run_worker, timeit  # noqa: E402

THREADS = int(os.environ.get("MECHSCOPE_BENCH_THREADS", "2"))
"""torch threads in every worker (``--threads`` sets it for the workers it starts)."""

GPT2_SHAPE = dict(n_layers=4, d_model=512, n_heads=8, d_head=64, d_mlp=2048, d_vocab=8192, n_ctx=256)


def _hf_smollm2(g):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{k: v for k, v in g.hf_config.items() if k != "model_type"})
    model = LlamaForCausalLM(cfg)
    missing, unexpected = model.load_state_dict(g.state_dict, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    model.tie_weights()
    return model.eval()


def _smollm2_worker(which: str, batch: int, pos: int, dtype_name: str = "float32") -> dict:
    import torch

    torch.set_num_threads(THREADS)
    from mechscope.models.gguf import read_gguf
    from mechscope.models.loading import from_hf_state
    from mechscope.models.registry import locate_gguf

    dtype = getattr(torch, dtype_name)
    g = read_gguf(locate_gguf("smollm2-135m"))
    tokens = torch.randint(1000, 40000, (batch, pos), generator=torch.Generator().manual_seed(0))
    if which == "hf":
        model = _hf_smollm2(g).to(dtype)
        fn = lambda: model(tokens, use_cache=False).logits  # noqa: E731
    else:
        model = from_hf_state(dict(g.hf_config, model_type="llama"), g.state_dict).to(dtype)
        if which == "ours":
            fn = lambda: model(tokens)  # noqa: E731
        else:  # ours_cache_all
            fn = lambda: model.run_with_cache(tokens)  # noqa: E731
    flops = _smollm2_flops(g.hf_config, batch, pos)
    del g
    with torch.inference_mode() if which != "ours_cache_all" else torch.no_grad():
        t = timeit(fn)
    return {**t, "tokens_per_s": batch * pos / t["median_s"], "gflops_per_s": flops / t["median_s"] / 1e9,
            "peak_rss_mb": peak_rss_mb()}


def _smollm2_flops(hf_config: dict, batch: int, pos: int) -> float:
    """Forward FLOPs: 2·(linear params)·tokens incl. the unembedding, + attention 4·batch·n_heads·pos²·d_head."""
    return sum(2 * k * n * count for k, n, count in _linear_shapes(hf_config)) * batch * pos + (
        4 * batch * hf_config["num_attention_heads"] * pos**2 * _d_head(hf_config) * hf_config["num_hidden_layers"])


def _d_head(c: dict) -> int:
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


def _linear_shapes(c: dict) -> list[tuple[int, int, int]]:
    """(d_in, d_out, how many) of every matmul of the forward (Q/K/V and gate/up fused as we run them)."""
    d, m, e, L = c["hidden_size"], c["intermediate_size"], _d_head(c), c["num_hidden_layers"]
    h, kv = c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
    return [(d, (h + 2 * kv) * e, L), (h * e, d, L), (d, 2 * m, L), (m, d, L), (d, c["vocab_size"], 1)]


def _mm_worker(dtype_name: str, batch: int, pos: int) -> dict:
    """torch.mm GFLOP/s on each of SmolLM2's matmul shapes (tokens = batch·pos rows), 2 threads."""
    import torch

    torch.set_num_threads(THREADS)
    from mechscope.models.gguf import read_gguf
    from mechscope.models.registry import locate_gguf

    dtype, t = getattr(torch, dtype_name), batch * pos
    shapes = _linear_shapes(read_gguf(locate_gguf("smollm2-135m")).hf_config)
    out: dict = {"shapes": {}}
    floor = 0.0
    for k, n, count in shapes:
        x, w = torch.randn(t, k).to(dtype), torch.randn(k, n).to(dtype)
        r = timeit(lambda x=x, w=w: torch.mm(x, w), repeats=7 if n < 10_000 else 3)
        gf = 2 * t * k * n / r["min_s"] / 1e9
        out["shapes"][f"{t}x{k}@{k}x{n}"] = round(gf, 1)
        floor += count * r["min_s"]
    out["mm_peak_gflops"] = max(out["shapes"].values())
    out["mm_floor_s"] = floor
    return out


def _interleaved_worker(dtype_name: str, batch: int, pos: int, rounds: int = 7) -> dict:
    """Ours and transformers in one process, calls alternating (A B A B ...), so background load hits both
    alike; also checks that both give the same logits."""
    import statistics
    import time

    import torch

    torch.set_num_threads(THREADS)
    from mechscope.models.gguf import read_gguf
    from mechscope.models.loading import from_hf_state
    from mechscope.models.registry import locate_gguf

    dtype = getattr(torch, dtype_name)
    g = read_gguf(locate_gguf("smollm2-135m"))
    tokens = torch.randint(1000, 40000, (batch, pos), generator=torch.Generator().manual_seed(0))
    hf = _hf_smollm2(g).to(dtype)
    ours = from_hf_state(dict(g.hf_config, model_type="llama"), g.state_dict).to(dtype).eval()
    flops = _smollm2_flops(g.hf_config, batch, pos)
    del g
    fns = {"hf": lambda: hf(tokens, use_cache=False).logits, "ours": lambda: ours(tokens)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        max_abs = float((fns["ours"]().float() - fns["hf"]().float()).abs().max())  # also the warm-up
        for _ in range(rounds):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    out: dict = {k: {"median_s": statistics.median(v), "min_s": min(v),
                     "gflops_per_s": flops / statistics.median(v) / 1e9} for k, v in times.items()}
    out["time_ratio_ours_over_hf"] = {"median": out["ours"]["median_s"] / out["hf"]["median_s"],
                                      "min": out["ours"]["min_s"] / out["hf"]["min_s"]}
    out["logits_max_abs_diff"] = max_abs
    out["forward_gflop"] = flops / 1e9
    return out


def _gpt2_ours_worker(which: str, batch: int, pos: int) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig, PositionalConfig
    from mechscope.models.transformer import HookedTransformer

    s = GPT2_SHAPE
    cfg = ModelConfig(d_model=s["d_model"], n_layers=s["n_layers"], d_vocab=s["d_vocab"], n_ctx=s["n_ctx"],
                      attention=AttentionConfig(n_heads=s["n_heads"], d_head=s["d_head"], qkv_bias=True, out_bias=True),
                      mlp=MLPConfig(d_mlp=s["d_mlp"], act="gelu_new", bias=True), norm=NormConfig(kind="layernorm"),
                      positional=PositionalConfig(kind="learned"))
    model = HookedTransformer(cfg, seed=0).eval()
    tokens = torch.randint(0, s["d_vocab"], (batch, pos), generator=torch.Generator().manual_seed(0))
    tl_names = _tl_hook_names(model)
    if which == "forward":
        fn = lambda: model(tokens)  # noqa: E731
    elif which == "cache_tl_names":  # exactly the hook points TransformerLens's default model has
        fn = lambda: model.run_with_cache(tokens, names=tl_names)  # noqa: E731
    else:  # every hook point we have, incl. per-head inputs and hook_result
        fn = lambda: model.run_with_cache(tokens)  # noqa: E731
    with torch.no_grad():
        t = timeit(fn)
    _, cache = model.run_with_cache(tokens, names=None if which == "cache_all" else tl_names)
    return {**t, "tokens_per_s": batch * pos / t["median_s"], "peak_rss_mb": peak_rss_mb(),
            "n_cached": len(cache), "cache_mb": cache.nbytes() / 2**20}


def _tl_hook_names(model) -> list[str]:
    skip = ("hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input", "attn.hook_result", "hook_tokens")
    return [n for n in model.hook_dict if not n.endswith(skip)]


_TL_CODE = r"""
import json, statistics, time, resource, sys, torch
torch.set_num_threads(int(__import__("os").environ.get("MECHSCOPE_BENCH_THREADS", "2")))
from transformer_lens import HookedTransformer, HookedTransformerConfig
s = json.loads(sys.argv[1]); which = sys.argv[2]; batch, pos = int(sys.argv[3]), int(sys.argv[4])
cfg = HookedTransformerConfig(n_layers=s["n_layers"], d_model=s["d_model"], n_heads=s["n_heads"], d_head=s["d_head"],
    d_mlp=s["d_mlp"], d_vocab=s["d_vocab"], n_ctx=s["n_ctx"], act_fn="gelu_new", normalization_type="LN", seed=0)
model = HookedTransformer(cfg).eval()
tokens = torch.randint(0, s["d_vocab"], (batch, pos), generator=torch.Generator().manual_seed(0))
fn = (lambda: model(tokens)) if which == "forward" else (lambda: model.run_with_cache(tokens))
with torch.no_grad():
    fn(); ts = []
    for _ in range(5):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    _, cache = model.run_with_cache(tokens)
print(json.dumps({"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
    "tokens_per_s": batch * pos / statistics.median(ts),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "n_cached": len(cache),
    "cache_mb": sum(v.numel() * v.element_size() for v in cache.values()) / 2**20}))
"""


def _tl(which: str, batch: int, pos: int) -> dict:
    import json
    import subprocess

    if not os.path.exists(PEERS_PY):
        return {"skipped": f"no peer environment at {PEERS_PY} (see benchmarks/README.md)"}
    proc = subprocess.run([PEERS_PY, "-c", _TL_CODE, json.dumps(GPT2_SHAPE), which, str(batch), str(pos)],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-3:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _smollm2_rows(me: str) -> dict:
    sm: dict = {}
    for dt in ("float32", "bfloat16"):
        rows = ("hf", "ours", "ours_cache_all") if dt == "float32" else ("hf", "ours")
        r = {w: run_worker(me, __file__, ["--worker", "smollm2", w, "8", "128", dt]) for w in rows}
        r["mm"] = run_worker(me, __file__, ["--worker", "mm", dt, "8", "128"])
        r["interleaved"] = run_worker(me, __file__, ["--worker", "interleaved", dt, "8", "128"])
        if "median_s" in r["hf"] and "median_s" in r["ours"]:
            r["time_ratio_ours_over_hf"] = r["ours"]["median_s"] / r["hf"]["median_s"]
        if "mm_floor_s" in r["mm"] and "median_s" in r["ours"]:
            r["mm_floor_share_of_ours"] = r["mm"]["mm_floor_s"] / r["ours"]["median_s"]
            r["mm_floor_share_of_hf"] = r["mm"]["mm_floor_s"] / r["hf"]["median_s"]
        sm[dt] = r
    return sm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", nargs="+", metavar="ARG", help="KIND WHICH BATCH POS [DTYPE] (internal)")
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--only-smollm2", action="store_true")
    ap.add_argument("--threads", type=int, default=THREADS, help="torch threads per worker (default 2)")
    args = ap.parse_args()
    os.environ["MECHSCOPE_BENCH_THREADS"] = str(args.threads)
    if args.worker:
        kind, which, b, p, *rest = args.worker
        if kind == "smollm2":
            emit(_smollm2_worker(which, int(b), int(p), *rest))
        elif kind == "mm":
            emit(_mm_worker(which, int(b), int(p)))
        elif kind == "interleaved":
            emit(_interleaved_worker(which, int(b), int(p)))
        else:
            emit(_gpt2_ours_worker(which, int(b), int(p)))
        return
    me = sys.executable
    out: dict = {"machine": machine(), "load_avg_before": os.getloadavg(),
                 "note": f"{args.threads} torch thread(s), fresh process per row, medians of 5 (interleaved: 7 rounds)"}
    if not args.skip_smollm2:
        out["smollm2_8x128"] = _smollm2_rows(me)
        fp32 = out["smollm2_8x128"]["float32"]
        if "time_ratio_ours_over_hf" in fp32:
            out["smollm2_forward_time_ratio_ours_over_hf"] = fp32["time_ratio_ours_over_hf"]
    if not args.only_smollm2:
        g = {f"ours_{w}": run_worker(me, __file__, ["--worker", "gpt2", w, "16", "128"])
             for w in ("forward", "cache_tl_names", "cache_all")}
        g["tl_forward"] = _tl("forward", 16, 128)
        g["tl_cache_all"] = _tl("cache", 16, 128)
        out["gpt2_shape_16x128"] = {"shape": GPT2_SHAPE, **g}
        if "median_s" in g["tl_cache_all"]:
            tl = g["tl_cache_all"]["median_s"]
            out["cache_time_ratio_ours_over_tl"] = {k: g[k]["median_s"] / tl
                                                    for k in ("ours_cache_tl_names", "ours_cache_all")
                                                    if "median_s" in g[k]}
            out["forward_time_ratio_ours_over_tl"] = g["ours_forward"]["median_s"] / g["tl_forward"]["median_s"]
    out["load_avg_after"] = os.getloadavg()
    emit(out)


if __name__ == "__main__":
    main()
