"""Distributed dictionary work on this machine: throughput at 1, 2, 4 gloo ranks, bytes per step, projections.

* **training** (data parallel, TopK d_in=576 d_sae=2304 k=32, global batch 2048 split over the ranks):
  step time, the part spent in the gradient all-reduce (timed separately), all-reduce bytes per step.
* **harvest** (sharded by shard index, a 4-layer d_model=256 random llama, 64-token sequences): rows/s.
* **projection** to N machines from the 1-rank compute time and the gradient size: a ring all-reduce moves
  ``2 (N-1)/N * bytes`` per rank, so ``step(N) = compute/N + 2 (N-1)/N * bytes / bandwidth + latency`` at
  10 and 100 Gb/s (the loopback gloo figure measured here is reported too, but on 2 shared cores it mostly
  measures CPU contention, not a network).
* **streaming vs store**: the same TopK training fed straight from the model vs from a harvested store.
* **distributed streaming** (``--streams-only`` runs just these): data-parallel ``dict stream`` (each rank runs
  every W-th forward pass, rows all-gathered, gradients all-reduced) and hookpoint-parallel streaming (two
  hooks, each rank trains its hook's dictionary on the all-gathered global batches) at 1 and 2 ranks: tokens/s
  and bytes sent per token (activation all-gathers + gradient all-reduces, from ``Sync.bytes_sent``).

Ranks are started with ``torch.multiprocessing`` (the library itself never starts processes). The machine has
2 cores shared with other jobs: expect no speed-up beyond 2 ranks; the point is correctness and overhead.
Usage: ``OMP_NUM_THREADS=1 python benchmarks/distributed.py [--quick]`` (prints JSON).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

D_IN, D_SAE, K, BATCH = 576, 2304, 32, 2048


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, world: int, port: int, job: str, steps: int, out: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    import torch.distributed as dist

    from mechscope.distributed import LOCAL, init_from_env

    sync = init_from_env(backend="gloo") if world > 1 else LOCAL
    try:
        res = {"train": _train, "harvest": _harvest, "stream": _stream, "stream_hooks": _stream_hooks}[job](
            sync, steps, out)
        if sync.is_writer:
            Path(out, "result.json").write_text(json.dumps(res))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


class _TimedSync:
    """Wraps a Sync to time its gradient all-reduce (the communication part of a step)."""

    def __init__(self, sync: Any) -> None:
        self.inner, self.comm_s = sync, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def all_reduce_grads(self, params: Any) -> None:
        t0 = time.perf_counter()
        self.inner.all_reduce_grads(params)
        self.comm_s += time.perf_counter() - t0


def _train(sync: Any, steps: int, out: str) -> dict[str, Any]:
    from mechscope.dictionaries.topk import TopKConfig, TopKDictionary
    from mechscope.dictionaries.train import Trainer, TrainerConfig
    from mechscope.distributed import rank_slice

    d = TopKDictionary(TopKConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    timed = _TimedSync(sync)
    tr = Trainer(d, TrainerConfig(total_steps=steps + 1, progress=False), timed)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(0)
    data = [torch.randn(BATCH, D_IN, generator=g) for _ in range(2)]
    x = rank_slice(data[0], sync)
    tr.train_step(x, x)  # warm-up
    sync.barrier()
    timed.comm_s, bytes0 = 0.0, sync.bytes_sent
    t0 = time.perf_counter()
    for i in range(steps):
        x = rank_slice(data[i % 2], sync)
        tr.train_step(x, x)
    sync.barrier()
    wall = time.perf_counter() - t0
    return {"ranks": sync.world_size, "steps": steps, "step_s": wall / steps, "comm_s_per_step": timed.comm_s / steps,
            "bytes_per_step": (sync.bytes_sent - bytes0) / steps, "tokens_per_s": steps * BATCH / wall}


def _tiny_model() -> Any:
    from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig, PositionalConfig
    from mechscope.models.transformer import HookedTransformer

    cfg = ModelConfig(d_model=256, n_layers=4, d_vocab=1000, n_ctx=64, architecture="llama",
                      attention=AttentionConfig(n_heads=8, d_head=32, n_kv_heads=4),
                      mlp=MLPConfig(kind="gated", d_mlp=768, act="silu"), norm=NormConfig(kind="rmsnorm"),
                      positional=PositionalConfig(kind="rotary"))
    return HookedTransformer(cfg, seed=0).eval()


def _split(n_tokens: int) -> Any:
    import numpy as np

    from mechscope.data.corpus import TokenSplit

    return TokenSplit(np.random.default_rng(0).integers(0, 1000, size=n_tokens).astype(np.uint16), 1000, 3, 1)


def _source() -> Any:
    from mechscope.activations.source import ActivationSource, SourceConfig

    return ActivationSource(_tiny_model(), ["blocks.3.hook_resid_post"], _split(200_000),
                            SourceConfig(seq_len=64, batch_size=16))


def _harvest(sync: Any, rows: int, out: str) -> dict[str, Any]:
    from mechscope.activations.sharded import harvest_sharded

    src = _source()
    sync.barrier()
    t0 = time.perf_counter()
    harvest_sharded(src, Path(out) / "store", rows, sync=sync, shard_rows=4096, progress=False)
    wall = time.perf_counter() - t0
    return {"ranks": sync.world_size, "rows": rows, "seconds": wall, "rows_per_s": rows / wall}


STREAM_KW: dict[str, Any] = dict(d_sae=2048, options={"k": 32}, batch_size=1024, buffer_rows=8192, progress=False)


def _stream(sync: Any, n_tokens: int, out: str) -> dict[str, Any]:
    from mechscope.experiments.streaming import train_streaming

    src = _source()
    sync.barrier()
    t0 = time.perf_counter()
    train_streaming(src, Path(out) / "s", "topk", n_tokens=n_tokens, sync=sync, **STREAM_KW)
    wall = time.perf_counter() - t0
    return {"ranks": sync.world_size, "tokens": n_tokens, "seconds": wall, "tokens_per_s": n_tokens / wall,
            "bytes_sent_per_token": sync.bytes_sent / n_tokens}


def _stream_hooks(sync: Any, n_tokens: int, out: str) -> dict[str, Any]:
    from mechscope.activations.source import ActivationSource, SourceConfig
    from mechscope.experiments.streaming import train_hooks_streaming

    src = ActivationSource(_tiny_model(), ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"], _split(200_000),
                           SourceConfig(seq_len=64, batch_size=16))
    sync.barrier()
    t0 = time.perf_counter()
    train_hooks_streaming(src, Path(out) / "h", "topk", n_tokens=n_tokens, sync=sync, **STREAM_KW)
    wall = time.perf_counter() - t0
    return {"ranks": sync.world_size, "hooks": 2, "tokens": n_tokens, "seconds": wall, "tokens_per_s": n_tokens / wall,
            "bytes_sent_per_token": sync.bytes_sent / n_tokens}


def _launch(world: int, job: str, steps: int) -> dict[str, Any]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        if world == 1:
            _entry(0, 1, 0, job, steps, tmp)
        else:
            mp.spawn(_entry, args=(world, _port(), job, steps, tmp), nprocs=world, join=True)
        return dict(json.loads(Path(tmp, "result.json").read_text()))


def _streaming_vs_store(n_tokens: int) -> dict[str, Any]:
    from mechscope.experiments.dictionaries import train_on_store
    from mechscope.experiments.streaming import train_streaming

    kw = STREAM_KW
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train_streaming(_source(), Path(tmp) / "s", "topk", n_tokens=n_tokens, **kw)
        stream_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        _source().harvest(Path(tmp) / "store", n_tokens, shard_rows=8192, progress=False)
        harvest_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_on_store(Path(tmp) / "store", Path(tmp) / "t", "topk", shuffle_shards=False, **kw)
        store_s = time.perf_counter() - t0
    return {"tokens": n_tokens, "streaming_tokens_per_s": n_tokens / stream_s,
            "store_training_tokens_per_s": n_tokens / store_s, "harvest_tokens_per_s": n_tokens / harvest_s,
            "harvest_then_store_tokens_per_s": n_tokens / (harvest_s + store_s)}


def _project(one: dict[str, Any], bytes_per_step: float) -> list[dict[str, Any]]:
    compute = one["step_s"]
    out = []
    for gbit in (10, 100):
        bw = gbit * 1e9 / 8
        for n in (1, 2, 4, 8, 16, 32):
            comm = 0.0 if n == 1 else 2 * (n - 1) / n * bytes_per_step / bw + 50e-6 * 2 * (n - 1)
            step = compute / n + comm
            out.append({"machines": n, "network_gbit_s": gbit, "step_s": step, "tokens_per_s": BATCH / step,
                        "comm_fraction": comm / step})
    return out


def main() -> None:
    quick = "--quick" in sys.argv
    torch.set_num_threads(1)
    n_stream = 4096 if quick else 16384
    streams = {"machine": {"cores": os.cpu_count(), "load_avg_1min": os.getloadavg()[0], "threads_per_rank": 1},
               "stream_data_parallel": [_launch(w, "stream", n_stream) for w in (1, 2)],
               "stream_hookpoint_parallel": [_launch(w, "stream_hooks", n_stream) for w in (1, 2)]}
    if "--streams-only" in sys.argv:
        print(json.dumps(streams, indent=1))
        return
    steps, rows = (3, 4096) if quick else (8, 16384)
    train = [_launch(w, "train", steps) for w in (1, 2, 4)]
    harvest = [_launch(w, "harvest", rows) for w in (1, 2, 4)]
    grad_bytes = max(r["bytes_per_step"] for r in train)
    result = {
        "machine": {"cores": os.cpu_count(), "load_avg_1min": os.getloadavg()[0], "threads_per_rank": 1},
        "train": train, "harvest": harvest,
        "gradient_bytes_per_step": grad_bytes,
        "loopback_allreduce_gbit_s": [8 * r["bytes_per_step"] / r["comm_s_per_step"] / 1e9
                                      for r in train if r["ranks"] > 1],
        "projection": _project(train[0], grad_bytes),
        "streaming_vs_store": _streaming_vs_store(4096 if quick else 16384),
    } | {k: v for k, v in streams.items() if k != "machine"}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
