"""Functions run on each rank by the distributed tests (module level, so spawn can import them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mechscope.distributed import Sync, rank_slices

D_IN, D_SAE, BATCH = 6, 16, 32


def batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    """Global batches with a few large directions (so latents die and aux-k runs)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(BATCH, D_IN, generator=g) * torch.linspace(0.2, 3, D_IN) + 1 for _ in range(n)]


def dictionary(arch: str = "topk") -> Any:
    from mechscope.dictionaries.registry import create, dictionary_class

    kw: dict[str, Any] = {"topk": {"k": 2, "aux_k": 3}, "batchtopk": {"k": 2, "aux_k": 3},
                          "relu": {"l1_coefficient": 0.3}}[arch]
    cls = dictionary_class(arch).config_class
    return create(cls(d_in=D_IN, d_sae=D_SAE, seed=3, normalize_activations="expected_norm", **kw))


def trainer_cfg(out: Path | None, total: int = 8, every: int | None = None) -> Any:
    from mechscope.dictionaries.train import TrainerConfig

    return TrainerConfig(total_steps=total, lr=3e-2, lr_warmup_steps=2, lr_decay_steps=3, progress=False,
                         dead_window_tokens=2 * BATCH, norm_estimate_batches=2, log_every=2,
                         out_dir=None if out is None else str(out), checkpoint_every=every)


def fit(sync: Sync, arch: str, out: str, n_batches: int, total: int = 8, every: int | None = None,
        die_after: int | None = None) -> None:
    """Train ``arch`` on this rank's share of the first ``n_batches`` global batches into ``out``.

    ``die_after``: rank 1 exits abruptly (``os._exit``) when asked for that batch (a killed rank).
    """
    from mechscope.dictionaries import io
    from mechscope.dictionaries.train import Trainer

    def data() -> Any:
        for i, b in enumerate(batches(n_batches)):
            if die_after is not None and sync.rank == 1 and i == die_after:
                os._exit(3)
            yield b

    d = dictionary(arch)
    Trainer(d, trainer_cfg(Path(out), total, every), sync).fit(rank_slices(data(), sync))
    if sync.is_writer:
        io.save(d, Path(out) / "weights")


def tiny_model() -> Any:
    from tests.conftest import tiny_model as tm

    return tm("llama", n_layers=3)


def token_split() -> Any:
    from mechscope.data.corpus import TokenSplit

    rng = np.random.default_rng(0)
    return TokenSplit(rng.integers(0, 50, size=1400).astype(np.uint16), 50, 3, 1)


HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]


def source(hooks: list[str] = HOOKS) -> Any:
    from mechscope.activations.source import ActivationSource, SourceConfig

    return ActivationSource(tiny_model(), hooks, token_split(),
                            SourceConfig(seq_len=12, batch_size=5, exclude_token_ids=(3,), seed=1))


STREAM = {"n_tokens": 320, "d_sae": 16, "options": {"k": 2, "aux_k": 3, "seed": 3}, "batch_size": 16,
          "buffer_rows": 64, "lr": 1e-2, "progress": False}


def stream_fit(sync: Sync, out: str, arch: str = "topk") -> None:
    """Data-parallel streaming: each rank runs its share of the forward passes (hook 0 only)."""
    from mechscope.experiments.streaming import train_streaming

    train_streaming(source(HOOKS[:1]), out, arch, sync=sync, **STREAM)  # type: ignore[arg-type]


def stream_hooks(sync: Sync, out: str) -> None:
    """Hookpoint parallel from the model: each rank trains its hooks on the all-gathered global batches."""
    from mechscope.experiments.streaming import train_hooks_streaming

    train_hooks_streaming(source(), out, "topk", sync=sync, **STREAM)  # type: ignore[arg-type]


def harvest(sync: Sync, out: str, n_tokens: int, shard_rows: int, die_on_shard: int | None = None) -> None:
    """Sharded harvest of the tiny model; rank 1 dies while writing its ``die_on_shard``-th shard."""
    import mechscope.activations.sharded as sh

    if die_on_shard is not None and sync.rank == 1:
        real, count = sh.atomic_save_tensors, [0]

        def dying(path: Path, tensors: dict[str, torch.Tensor], metadata: Any = None) -> None:
            count[0] += 1
            if count[0] == die_on_shard:
                tmp = path.with_name("." + path.name + ".partial")
                tmp.write_bytes(b"half a shard")  # debris a killed writer leaves behind
                os._exit(3)
            real(path, tensors, metadata)

        sh.atomic_save_tensors = dying  # type: ignore[assignment]
    sh.harvest_sharded(source(), out, n_tokens, sync=sync, shard_rows=shard_rows, progress=False)


def train_hooks(sync: Sync, store: str, out: str) -> None:
    from mechscope.experiments.scale import train_hooks as run

    run(store, out, "topk", hooks=HOOKS, sync=sync, d_sae=16, options={"k": 2}, batch_size=16, steps=6,
        buffer_rows=64, progress=False)


def jobs(sync: Sync, todo: list[tuple[str, tuple[Any, ...]]]) -> None:
    """Run several of the functions above in one launch (each ``(name, args)``), in order."""
    for name, args in todo:
        globals()[name](sync, *args)
