"""Dictionary training throughput: mechscope vs SAELens on the same workload, and vs the matmul peak.

Workload: d_in 576, d_sae 4608, batch 4096 random activations, ReLU-L1 and TopK (k=32), Adam, in float32
and in bfloat16 autocast (float32 weights and Adam state; ``TrainerConfig(precision=...)``). SAELens
(sae-lens in the side venv, default /tmp/peers-venv) runs its own ``SAETrainer.step`` in a subprocess right
after ours, at the same precision (``torch.autocast("cpu", torch.bfloat16)`` around its step for bf16).
GFLOP/s counts the multiply-adds each method needs: a dense ReLU step = 5 matmuls of 2*B*d_in*d_sae
(encode, decode, the decoder's input gradient, two weight gradients; the input needs no gradient);
mechscope's TopK step = one dense encoder matmul plus four sparse products of 2*B*k*d_in (five under bf16,
where the kept values are recomputed exactly). ``fraction_of_matmul_peak`` is against the ``torch.mm``
peak of the same dtype, measured in the same run on the encoder's shape.

Usage: .venv/bin/python benchmarks/dict_train.py [--steps 6] [--peers-python /tmp/peers-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

B, D_IN, D_SAE, K = 4096, 576, 4608, 32

SAELENS_SCRIPT = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[3]))
from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.training.sae_trainer import SAETrainer
from sae_lens.config import SAETrainerConfig
arch, steps, precision = sys.argv[1], int(sys.argv[2]), sys.argv[4]
B, D_IN, D_SAE, K = 4096, 576, 4608, 32
if arch == "relu":
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, l1_coefficient=1.0))
else:
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
data = torch.randn(4 * B, D_IN, generator=torch.Generator().manual_seed(0))
cfg = SAETrainerConfig(total_training_samples=B * (steps + 1), train_batch_size_samples=B, lr_end=3e-4)
tr = SAETrainer(cfg, sae, iter(()))
times = []
for s in range(steps + 1):
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        tr.step(data[(s % 4) * B:(s % 4 + 1) * B])
    tr.n_training_steps += 1
    times.append(time.perf_counter() - t)
print(json.dumps({"step_s": times[1:]}))
"""


def matmul_peak(dtype: torch.dtype, reps: int = 7) -> float:
    """Median GFLOP/s of the encoder-shaped matmul [B d_in] @ [d_in d_sae] in ``dtype``."""
    a, b = torch.randn(B, D_IN, dtype=dtype), torch.randn(D_IN, D_SAE, dtype=dtype)
    out = torch.empty(B, D_SAE, dtype=dtype)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - t)
    return 2 * B * D_IN * D_SAE / statistics.median(times) / 1e9


def ours(arch: str, steps: int, precision: str) -> list[float]:
    from mechscope.dictionaries.registry import create, dictionary_class
    from mechscope.dictionaries.train import Trainer, TrainerConfig

    kwargs = {"k": K} if arch == "topk" else {"l1_coefficient": 1.0}
    d = create(dictionary_class(arch).config_class(d_in=D_IN, d_sae=D_SAE, **kwargs))
    tr = Trainer(d, TrainerConfig(total_steps=steps + 1, progress=False, precision=precision))
    data = torch.randn(4 * B, D_IN, generator=torch.Generator().manual_seed(0))
    times = []
    for s in range(steps + 1):
        x = data[(s % 4) * B:(s % 4 + 1) * B]
        t = time.perf_counter()
        tr.train_step(x, x)
        times.append(time.perf_counter() - t)
    return times[1:]


def saelens(arch: str, steps: int, python: str, threads: int, precision: str) -> list[float] | None:
    if not os.path.exists(python):
        return None
    res = subprocess.run([python, "-c", SAELENS_SCRIPT, arch, str(steps), str(threads), precision],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])["step_s"]


def flops(arch: str, precision: str) -> float:
    if arch == "relu":
        return 5 * 2 * B * D_IN * D_SAE
    return 2 * B * D_IN * D_SAE + (5 if precision == "bfloat16" else 4) * 2 * B * K * D_IN


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peers-python", default="/tmp/peers-venv/bin/python")
    p.add_argument("--precision", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    p.add_argument("--arch", nargs="+", default=["relu", "topk"], choices=["relu", "topk"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    peaks = {prec: matmul_peak(getattr(torch, prec)) for prec in args.precision}
    result: dict[str, object] = {
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "threads": args.threads,
        "torch": torch.__version__, "workload": {"batch": B, "d_in": D_IN, "d_sae": D_SAE, "k": K},
        "load_avg": os.getloadavg()[0], "matmul_peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
    }
    for prec in args.precision:
        for arch in args.arch:
            mine = statistics.median(ours(arch, args.steps, prec))
            peer_times = saelens(arch, args.steps, args.peers_python, args.threads, prec)
            peer = statistics.median(peer_times) if peer_times else None
            gflops = flops(arch, prec) / mine / 1e9
            result[f"{arch}/{prec}"] = {
                "mechscope_tok_s": round(B / mine), "mechscope_step_s": round(mine, 4),
                "saelens_tok_s": round(B / peer) if peer else None,
                "speedup_vs_saelens": round(peer / mine, 2) if peer else None,
                "gflops": round(gflops, 1), "fraction_of_matmul_peak": round(gflops / peaks[prec], 3),
                "dense_equiv_gflops": round(10 * B * D_IN * D_SAE / mine / 1e9, 1),
            }
            print(json.dumps({f"{arch}/{prec}": result[f"{arch}/{prec}"]}), file=sys.stderr, flush=True)
    result["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
