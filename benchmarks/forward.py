"""Forward-pass and caching speed: mechscope vs HF transformers (SmolLM2) and vs TransformerLens (GPT-2 shape).

Each workload runs in a fresh process (clean peak memory), 2 torch threads, medians of 5 after a warm-up.
TransformerLens runs in the side environment built by ``../shared/peers/setup_venv.sh /tmp/peers-venv``
(override with MECHSCOPE_PEERS_PYTHON); without it those rows say so.

    .venv/bin/python benchmarks/forward.py            # prints one JSON object
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import PEERS_PY, emit, machine, peak_rss_mb, run_worker, timeit  # noqa: E402

GPT2_SHAPE = dict(n_layers=4, d_model=512, n_heads=8, d_head=64, d_mlp=2048, d_vocab=8192, n_ctx=256)


def _smollm2_worker(which: str, batch: int, pos: int) -> dict:
    import torch

    torch.set_num_threads(2)
    from mechscope.models.gguf import read_gguf
    from mechscope.models.loading import from_hf_state
    from mechscope.models.registry import locate_gguf

    g = read_gguf(locate_gguf("smollm2-135m"))
    tokens = torch.randint(1000, 40000, (batch, pos), generator=torch.Generator().manual_seed(0))
    if which == "hf":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(**{k: v for k, v in g.hf_config.items() if k != "model_type"})
        model = LlamaForCausalLM(cfg)
        missing, unexpected = model.load_state_dict(g.state_dict, strict=False)
        assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
        model.tie_weights()
        model.eval()
        fn = lambda: model(tokens, use_cache=False).logits  # noqa: E731
    else:
        model = from_hf_state(dict(g.hf_config, model_type="llama"), g.state_dict)
        if which == "ours":
            fn = lambda: model(tokens)  # noqa: E731
        else:  # ours_cache_all
            fn = lambda: model.run_with_cache(tokens)  # noqa: E731
    del g
    with torch.inference_mode() if which != "ours_cache_all" else torch.no_grad():
        t = timeit(fn)
    return {**t, "tokens_per_s": batch * pos / t["median_s"], "peak_rss_mb": peak_rss_mb()}


def _gpt2_ours_worker(which: str, batch: int, pos: int) -> dict:
    import torch

    torch.set_num_threads(2)
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
torch.set_num_threads(2)
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", nargs=4, metavar=("KIND", "WHICH", "BATCH", "POS"))
    ap.add_argument("--skip-smollm2", action="store_true")
    args = ap.parse_args()
    if args.worker:
        kind, which, b, p = args.worker
        fn = _smollm2_worker if kind == "smollm2" else _gpt2_ours_worker
        emit(fn(which, int(b), int(p)))
        return
    me = sys.executable
    out: dict = {"machine": machine(), "note": "2 torch threads, fresh process per row, medians of 5"}
    if not args.skip_smollm2:
        sm = {w: run_worker(me, __file__, ["--worker", "smollm2", w, "8", "128"])
              for w in ("hf", "ours", "ours_cache_all")}
        out["smollm2_8x128"] = sm
        if "median_s" in sm["hf"] and "median_s" in sm["ours"]:
            out["smollm2_forward_time_ratio_ours_over_hf"] = sm["ours"]["median_s"] / sm["hf"]["median_s"]
    g = {f"ours_{w}": run_worker(me, __file__, ["--worker", "gpt2", w, "16", "128"])
         for w in ("forward", "cache_tl_names", "cache_all")}
    g["tl_forward"] = _tl("forward", 16, 128)
    g["tl_cache_all"] = _tl("cache", 16, 128)
    out["gpt2_shape_16x128"] = {"shape": GPT2_SHAPE, **g}
    if "median_s" in g["tl_cache_all"]:
        tl = g["tl_cache_all"]["median_s"]
        out["cache_time_ratio_ours_over_tl"] = {k: g[k]["median_s"] / tl for k in ("ours_cache_tl_names", "ours_cache_all")
                                                if "median_s" in g[k]}
        out["forward_time_ratio_ours_over_tl"] = g["ours_forward"]["median_s"] / g["tl_forward"]["median_s"]
    emit(out)


if __name__ == "__main__":
    main()
