"""Kill every mechscope writer at every crash point (each hit in turn), resume, and count what survived.

usage: OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/crash_harness.py [SCENARIO ...]

Scenarios and checks are in ``tests/unit/safety/writers.py``: the child process is forked and SIGKILLed by
``MECHSCOPE_CRASH_AT`` at the chosen point; then the run is resumed (no ``--overwrite``, nothing deleted by
hand) and compared with an uninterrupted run (bit-identical weights / shards, metrics once per step).
Prints one JSON object: per scenario kills tried / survived, torn files found right after a kill, failures.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.unit.safety.writers import harness  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    report = harness(sys.argv[1:] or None)
    total = {k: sum(int(r[k]) for r in report.values())  # type: ignore[call-overload]
             for k in ("kills_tried", "kills_survived", "torn_files_after_kill")}
    print(json.dumps({"scenarios": report, "total": total, "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
