"""Feature-database figures (prints JSON):

* ``harvest``: the feature harvest's pass over N tokens vs the bare forward (to the hook) + encode over the same
  batches, interleaved by round; the loop alone and with the one-off final write (logits through W_U,
  neighbours, DB insert) reported separately. Target: loop <= 1.3x.
* ``web``: p50 / p95 latency of a feature page and of a search with 16 concurrent clients on loopback, against a
  ``mechscope serve`` subprocess over a database of >= 10,000 features (bounded request count and time).
  Target p95 <= 150 ms.
* ``db``: database bytes per feature (the real harvest's file, and the synthetic one).

    python benchmarks/features.py --dictionary runs/features/sae-l6/dictionary --tokens 8192
    python benchmarks/features.py --only web --features 10000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402


def bench_harvest(dictionary: str, n_tokens: int, rounds: int) -> dict[str, Any]:
    import torch

    import mechscope
    from mechscope.activations.source import stop_layer
    from mechscope.dictionaries.io import load
    from mechscope.experiments.dictionaries import corpus_split
    from mechscope.features.db import FeatureDB
    from mechscope.features.harvest import HarvestConfig, Harvester, _capture
    from mechscope.features.source import dictionary_features

    model = mechscope.load("smollm2-135m").eval()
    d = load(dictionary).eval()
    fs = dictionary_features(model, d, "bench")
    split = corpus_split(model, "stdlib-docs")
    cfg = HarvestConfig(n_tokens=n_tokens, seq_len=64, batch_size=16, checkpoint_every=10**6)
    bare, loop, total = [], [], []
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            db = FeatureDB.open(Path(tmp) / "b.db")
            h = Harvester(model, fs, db, cfg, model_name="smollm2-135m", state_dir=tmp, tokens=split)
            # bare forward + encode over exactly the harvest's batches
            stop = stop_layer([fs.hook], model.cfg.n_layers)
            t = time.perf_counter()
            with torch.inference_mode():
                for s in range(0, h.n_sequences, cfg.batch_size):
                    toks = h.source.sequences(s, min(s + cfg.batch_size, h.n_sequences))
                    x = _capture(model, fs.hook, toks, stop)
                    fs.encode(x.reshape(-1, x.shape[-1]))
            bare.append(time.perf_counter() - t)
            marks: dict[str, float] = {}
            orig = h._write

            def timed_write(state: Any, _orig: Any = orig, marks: dict[str, float] = marks) -> None:
                marks["write_start"] = time.perf_counter()
                _orig(state)

            h._write = timed_write  # type: ignore[method-assign]
            t = time.perf_counter()
            h.run(progress=False)
            end = time.perf_counter()
            loop.append(marks["write_start"] - t)
            total.append(end - t)
            db.close()
        print(f"round {r}: bare {bare[-1]:.2f}s loop {loop[-1]:.2f}s total {total[-1]:.2f}s", file=sys.stderr)
    med = statistics.median
    return {"tokens": h.n_sequences * 63, "d_sae": fs.n_features, "hook": fs.hook, "rounds": rounds,
            "bare_forward_encode_s": med(bare), "harvest_loop_s": med(loop), "harvest_total_s": med(total),
            "ratio_loop": med(lo / b for lo, b in zip(loop, bare, strict=True)),
            "ratio_total": med(t / b for t, b in zip(total, bare, strict=True)),
            "final_write_s": med(t - lo for t, lo in zip(total, loop, strict=True))}


def synthetic_db(path: Path, n_features: int) -> None:
    """A database of ``n_features`` features shaped like a real harvest (20 top + 40 quantile examples each)."""
    import random

    from mechscope.features.db import FeatureDB

    rng = random.Random(0)
    words = [f" w{i}" for i in range(500)]
    db = FeatureDB.open(path)
    hist = json.dumps({"edges": [10 ** (-3 + 0.15 * i) for i in range(41)], "counts": [rng.randrange(50) for _ in range(40)]})
    with db.transaction():
        db.put_model("m", {})
        db.put_dictionary("synthetic", "m", "blocks.6.hook_resid_post", "sae", n_features, {})
        feats, exs = [], []
        pool = [(json.dumps([rng.choice(words) for _ in range(17)]), json.dumps([round(rng.random(), 4) for _ in range(17)]))
                for _ in range(500)]  # example windows reused across features (their content does not matter here)
        for f in range(n_features):
            logits = json.dumps([[rng.choice(words), rng.random()] for _ in range(10)])
            neigh = json.dumps([[rng.randrange(n_features), rng.random()] for _ in range(10)])
            feats.append(("synthetic", f, rng.random() * 0.05, rng.random(), rng.random() * 5, rng.randrange(10**4),
                          hist, logits, logits, neigh, neigh))
            for k in range(60):
                toks, acts = pool[rng.randrange(len(pool))]
                exs.append(("synthetic", f, "top" if k < 20 else "quantile", k, None if k < 20 else (k - 20) // 4,
                            rng.random() * 5, f * 1000 + k, 12, toks, acts))
        db.executemany("INSERT INTO features VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", feats)
        db.executemany("INSERT INTO examples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", exs)
        for f in range(0, n_features, 3):
            db.put_explanation("synthetic", f, "bench", f"explanation {rng.choice(words)} {f}")
            db.put_score("synthetic", f, "bench", "detection", rng.random(), 20, {})
    db.close()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live descendants (uvicorn's worker processes)."""
    total = _cpu_s(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += _tree_cpu_s(int(child))
    return total


def bench_web(n_features: int, clients: int, per_client: int, max_seconds: float, workers: int = 1) -> dict[str, Any]:
    import httpx

    from mechscope.web.server import free_port

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "web.db"
        t = time.perf_counter()
        synthetic_db(path, n_features)
        build_s = time.perf_counter() - t
        port = free_port()
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.Popen([sys.executable, "-m", "mechscope.cli.main", "serve", "--db", str(path), "--port",
                                 str(port)] + (["--workers", str(workers)] if workers > 1 else []), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(base + "/api/features?limit=1", timeout=2)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("mechscope serve did not start") from None
                    time.sleep(0.2)
            results: dict[str, Any] = {}
            for kind in ("feature_page", "search"):
                lat: list[float] = []
                errors = [0]
                stop_at = time.monotonic() + max_seconds

                def worker(seed: int, kind: str = kind, lat: list[float] = lat, errors: list[int] = errors,
                           stop_at: float = stop_at) -> None:
                    import random

                    rng = random.Random(seed)
                    with httpx.Client(base_url=base, timeout=30) as c:
                        for _ in range(per_client):
                            if time.monotonic() > stop_at:
                                break
                            url = (f"/features/synthetic/{rng.randrange(n_features)}" if kind == "feature_page"
                                   else f"/api/features?q=w{rng.randrange(500)}&limit=50&sort=score")
                            t0 = time.perf_counter()
                            r = c.get(url)
                            lat.append(time.perf_counter() - t0)
                            errors[0] += r.status_code != 200

                threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
                cpu0, own0 = _tree_cpu_s(proc.pid), _cpu_s(os.getpid())
                t0 = time.perf_counter()
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                wall = time.perf_counter() - t0
                server_cpu, client_cpu = _tree_cpu_s(proc.pid) - cpu0, _cpu_s(os.getpid()) - own0
                lat.sort()
                results[kind] = {"requests": len(lat), "errors": errors[0], "p50_ms": 1000 * lat[len(lat) // 2],
                                 "p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))], "max_ms": 1000 * lat[-1],
                                 "throughput_rps": len(lat) / wall,
                                 "server_cpu_ms_per_request": 1000 * server_cpu / max(len(lat), 1),
                                 "client_cpu_ms_per_request": 1000 * client_cpu / max(len(lat), 1),
                                 "load_average_after": os.getloadavg()[0]}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        size = path.stat().st_size + sum(p.stat().st_size for p in Path(tmp).glob("web.db-*"))
    return {"features": n_features, "clients": clients, "workers": workers, "db_build_s": build_s, "db_bytes_per_feature": size / n_features,
            **results}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["harvest", "web", "db"], default=None)
    ap.add_argument("--dictionary", default="runs/features/sae-l6/dictionary")
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--features", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--per-client", type=int, default=40)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument("--workers", type=int, default=1, help="mechscope serve --workers")
    ap.add_argument("--db", default="runs/features/smollm2.db", help="a real harvest's database (size per feature)")
    args = ap.parse_args()
    out: dict[str, Any] = {"machine": machine(), "load_average": os.getloadavg()}
    if args.only in (None, "db") and Path(args.db).exists():
        from mechscope.features.db import FeatureDB

        db = FeatureDB.open(args.db, read_only=True)
        n = db.count("features")
        out["db"] = {"path": args.db, "features": n, "examples": db.count("examples"),
                     "bytes_per_feature": Path(args.db).stat().st_size / max(n, 1)}
    if args.only in (None, "harvest"):
        out["harvest"] = bench_harvest(args.dictionary, args.tokens, args.rounds)
    if args.only in (None, "web"):
        out["web"] = bench_web(args.features, args.clients, args.per_client, args.max_seconds, args.workers)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
