"""Benchmark: the whole n=2, m=1 phase-diagram sweep (20 × 20 instances) trained in ONE batched run.

Prints one JSON object: wall and CPU seconds, per-step milliseconds, threads, machine and load average
(the machine is shared, so the load is part of the figure), and the phase counts as a sanity check.

    .venv/bin/python benchmarks/superposition.py [--grid 20] [--steps 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402

from mechscope.experiments.superposition.config import SuperpositionExperimentConfig
from mechscope.experiments.superposition.run import run_phase
from mechscope.toy.geometry import PHASE_NAMES


def main() -> None:
    """Time one batched phase-diagram run with the full experiment's training settings."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grid", type=int, default=20)
    ap.add_argument("--steps", type=int, default=None, help="default: the full experiment's phase_train.steps")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = SuperpositionExperimentConfig()
    train = base.phase_train if args.steps is None else dataclasses.replace(base.phase_train, steps=args.steps)
    cfg = SuperpositionExperimentConfig(phase_grid=args.grid, phase_train=train)
    load_before = os.getloadavg()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    res = run_phase(cfg)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    counts = torch.bincount(res["phase"].flatten(), minlength=3).tolist()
    emit({
        "benchmark": "superposition phase diagram, one batched run",
        "instances": args.grid ** 2, "steps": train.steps, "batch_size": train.batch_size,
        "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
        "ms_per_step": round(1000 * wall / train.steps, 2), "target_wall_seconds": 120,
        "within_target": wall <= 120, **machine(),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "phase_counts": dict(zip(PHASE_NAMES, counts, strict=True)),
    })


if __name__ == "__main__":
    main()
