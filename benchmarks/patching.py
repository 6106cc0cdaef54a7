"""Benchmark: batched activation patching vs TransformerLens's ``patching`` module (JSON on stdout).

Workloads
* GPT-2-shaped random model (4 layers, d_model 512, 8 heads, d_mlp 2048, vocab 8192), 1 prompt of 32 tokens:
  resid_pre layer × position sweep (128 patches) and head-output-by-position sweep (1,024 patches).
  mechscope runs in this process; TransformerLens runs the same sweeps on the *same weights* in a subprocess
  of the side venv (``/tmp/peers-venv/bin/python``), and the two results are compared numerically.
* SmolLM2-135M (mechscope only; TransformerLens cannot build it offline): resid_pre sweep and head sweep on
  one IOI prompt.

Usage: ``python benchmarks/patching.py [--threads 2] [--repeats 3] [--skip-tl] [--skip-smollm]
[--sweeps resid_pre,z_by_pos]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PEER_PY = Path("/tmp/peers-venv/bin/python")

TL_SCRIPT = r"""
import json, sys, time, statistics, torch
from safetensors.torch import load_file
from transformer_lens import HookedTransformer, HookedTransformerConfig, patching
threads, repeats, wpath, tpath = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
wanted = sys.argv[5].split(",")
torch.set_num_threads(threads)
cfg = HookedTransformerConfig(n_layers=4, d_model=512, n_heads=8, d_head=64, d_mlp=2048, d_vocab=8192, n_ctx=128,
                              act_fn="gelu_new", normalization_type="LN", positional_embedding_type="standard",
                              default_prepend_bos=False)
model = HookedTransformer(cfg)
missing = model.load_state_dict(load_file(wpath), strict=False)
model.eval()
t = load_file(tpath)
clean, corrupted, ans, wrong = t["clean"], t["corrupted"], t["answer"], t["wrong"]
def metric(logits):
    last = logits[:, -1]
    return (last.gather(-1, ans[:, None]) - last.gather(-1, wrong[:, None])).mean()
_, cache = model.run_with_cache(clean)
out = {"missing_keys": [k for k in missing.missing_keys if not k.endswith(("IGNORE", "mask"))]}
for name, fn in (("resid_pre", patching.get_act_patch_resid_pre),
                 ("z_by_pos", patching.get_act_patch_attn_head_out_by_pos)):
    if name not in wanted:
        continue
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            res = fn(model, corrupted, cache, metric)
        times.append(time.perf_counter() - t0)
    out[name] = {"seconds": statistics.median(times), "values": res.tolist()}
print(json.dumps(out))
"""


def gpt2_shaped() -> torch.nn.Module:
    from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig
    from mechscope.models.transformer import HookedTransformer

    cfg = ModelConfig(d_model=512, n_layers=4, d_vocab=8192, n_ctx=128,
                      attention=AttentionConfig(n_heads=8, d_head=64, qkv_bias=True, out_bias=True),
                      mlp=MLPConfig(d_mlp=2048, act="gelu_new", bias=True), unembed_bias=True, architecture="gpt2")
    return HookedTransformer(cfg, seed=0).eval()


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_gpt2(threads: int, repeats: int, skip_tl: bool, sweeps: list[str]) -> dict:
    from mechscope.interventions.patching import patch_sweep
    from mechscope.metrics import LogitDiff

    model = gpt2_shaped()
    gen = torch.Generator().manual_seed(1)
    clean = torch.randint(0, 8192, (1, 32), generator=gen)
    corrupted = clean.clone()
    corrupted[0, 5] = (clean[0, 5] + 1) % 8192
    corrupted[0, 20] = (clean[0, 20] + 1) % 8192
    answer, wrong = torch.tensor([7]), torch.tensor([11])
    metric = LogitDiff(answer, wrong)
    out: dict = {"workload": "random GPT-2-shaped, 4 layers d_model 512, 1 prompt x 32 tokens"}
    for sweep in sweeps:
        sec, res = timed(lambda s=sweep: patch_sweep(model, clean, corrupted, metric, s), repeats)
        out[sweep] = {"mechscope_seconds": round(sec, 4), "patches": res.values.numel(),  # type: ignore[attr-defined]
                      "mechscope_ms_per_patch": round(1000 * sec / res.values.numel(), 3)}  # type: ignore[attr-defined]
        out[sweep]["_values"] = res.values  # type: ignore[attr-defined]
    if not skip_tl and PEER_PY.exists():
        out.update(_run_tl(model, clean, corrupted, answer, wrong, threads, repeats, out, sweeps))
    for sweep in sweeps:
        out[sweep].pop("_values")
    return out


def _run_tl(model, clean, corrupted, answer, wrong, threads: int, repeats: int, out: dict,
            sweeps: list[str]) -> dict:
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as d:
        w, t = os.path.join(d, "w.safetensors"), os.path.join(d, "t.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, w)
        save_file({"clean": clean, "corrupted": corrupted, "answer": answer, "wrong": wrong}, t)
        script = os.path.join(d, "tl.py")
        Path(script).write_text(TL_SCRIPT)
        proc = subprocess.run([str(PEER_PY), script, str(threads), str(repeats), w, t, ",".join(sweeps)],
                              capture_output=True,
                              text=True, timeout=3600)
    if proc.returncode != 0:
        return {"transformer_lens_error": proc.stderr[-2000:]}
    tl = json.loads(proc.stdout.strip().splitlines()[-1])
    extra: dict = {"transformer_lens_missing_keys": tl["missing_keys"]}
    for sweep in sweeps:
        tl_vals = torch.tensor(tl[sweep]["values"])
        ours = out[sweep]["_values"]
        out[sweep]["transformer_lens_seconds"] = round(tl[sweep]["seconds"], 4)
        out[sweep]["speedup_vs_transformer_lens"] = round(tl[sweep]["seconds"] / out[sweep]["mechscope_seconds"], 1)
        out[sweep]["max_abs_diff_vs_transformer_lens"] = float((tl_vals.reshape(ours.shape) - ours).abs().max())
    return extra


def bench_smollm(repeats: int) -> dict:
    import mechscope
    from mechscope.data.tasks.ioi import ioi_pairs
    from mechscope.interventions.patching import patch_sweep

    t0 = time.perf_counter()
    model = mechscope.load("smollm2-135m")
    load_s = time.perf_counter() - t0
    p = ioi_pairs(model.tokenizer, 1, order="ABBA")
    out: dict = {"workload": f"SmolLM2-135M, 1 IOI prompt x {p.clean.shape[1]} tokens", "load_seconds": round(load_s, 1)}
    with torch.inference_mode():
        model(p.corrupted)  # warm-up
        fwd, _ = timed(lambda: model(p.corrupted), 5)
    out["one_forward_seconds"] = round(fwd, 4)
    for sweep in ("resid_pre", "z"):
        sec, res = timed(lambda s=sweep: patch_sweep(model, p.clean, p.corrupted, p.metric(), s), repeats)
        n = res.values.numel()  # type: ignore[attr-defined]
        out[sweep] = {"seconds": round(sec, 3), "patches": n, "ms_per_patch": round(1000 * sec / n, 2),
                      "vs_one_forward_per_patch": round(n * fwd / sec, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-tl", action="store_true")
    ap.add_argument("--skip-smollm", action="store_true")
    ap.add_argument("--sweeps", default="resid_pre,z_by_pos", help="GPT-2-shaped sweeps: resid_pre,z_by_pos")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads,
                          "torch": torch.__version__, "python": sys.version.split()[0]}, "repeats": args.repeats,
              "load_average": os.getloadavg(),
              "gpt2_shaped": bench_gpt2(args.threads, args.repeats, args.skip_tl, args.sweeps.split(","))}
    if not args.skip_smollm:
        report["smollm2"] = bench_smollm(args.repeats)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
