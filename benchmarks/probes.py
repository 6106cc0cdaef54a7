"""DAS on the hierarchical-equality MLP: wall time of the DAS training at one layer (the issue asks < 2 min on
2 cores), plus the MLP's training time and the IIA reached. Prints JSON.

    OMP_NUM_THREADS=2 python benchmarks/probes.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    import torch
    from _common import machine

    from mechscope.abstraction.causal_model import counterfactual_dataset
    from mechscope.abstraction.das import DASConfig, from_counterfactuals, train_das
    from mechscope.experiments.equality import EqualityConfig, causal_model, encode, sampler, train_mlp

    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = EqualityConfig()
    t0 = time.perf_counter()
    model, acc = train_mlp(cfg)
    t1 = time.perf_counter()
    cm, sample = causal_model(), sampler(cfg.d_obj)
    sets = [["WX"], ["YZ"], ["WX", "YZ"]]
    train = from_counterfactuals(counterfactual_dataset(cm, sample, cfg.n_train, sets, seed=1), ["WX", "YZ"], encode)
    test = from_counterfactuals(counterfactual_dataset(cm, sample, cfg.n_test, sets, seed=3), ["WX", "YZ"], encode)
    t2 = time.perf_counter()
    res = train_das(model, "blocks.0.hook_post", train, test,
                    DASConfig(dims=(cfg.dims, cfg.dims), epochs=cfg.das_epochs, batch_size=64, lr=cfg.das_lr))
    t3 = time.perf_counter()
    print(json.dumps({"machine": machine(), "mlp_train_seconds": round(t1 - t0, 2), "model_accuracy": round(acc, 4),
                      "counterfactuals_seconds": round(t2 - t1, 2), "das_train_seconds": round(t3 - t2, 2),
                      "das_steps": len(res.losses), "n_train": cfg.n_train, "epochs": cfg.das_epochs,
                      "iia_layer0": round(res.iia, 4)}))


if __name__ == "__main__":
    main()
