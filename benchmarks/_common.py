"""Helpers shared by benchmark scripts: machine facts, medians, peak RSS, running a worker subprocess."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

PEERS_PY = os.environ.get("MECHSCOPE_PEERS_PYTHON", "/tmp/peers-venv/bin/python")


def machine() -> dict[str, Any]:
    """Facts that make figures comparable."""
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine()}


def timeit(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median / min / max seconds of ``fn`` after warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(python: str, script: str, args: list[str], timeout: float = 1800) -> dict[str, Any]:
    """Run ``python script --worker ...`` in a fresh process (clean peak-memory figures); parse its JSON."""
    proc = subprocess.run([python, script, *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-5:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def emit(obj: dict[str, Any]) -> None:
    """Print one JSON object (the benchmark's result)."""
    print(json.dumps(obj, indent=None if "--worker" in sys.argv else 2))
