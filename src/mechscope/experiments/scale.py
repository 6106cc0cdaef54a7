"""Dictionaries at scale: distributed harvest, data- and hookpoint-parallel training (torchrun-launched).

* :func:`harvest_distributed` — the ``dict harvest`` pipeline, each rank writing its share of the shards
  (``activations.sharded``); equals a single-process harvest row for row.
* data parallel — ``experiments.dictionaries.train_on_store(..., sync=...)``: every rank reads the same
  global batches and steps on its share; gradients are all-reduced (``distributed.Sync``).
* :func:`train_hooks` — hookpoint parallel (sparsify's ``--distribute_modules``): rank ``r`` trains the
  dictionaries of hooks ``r, r + W, ...``, each exactly as training it alone would.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechscope.distributed import LOCAL, Sync, owned


def hook_dir(out_dir: str | os.PathLike[str], hook: str) -> Path:
    """Run directory of ``hook``'s dictionary inside a hookpoint-parallel ``out_dir``."""
    return Path(out_dir) / hook


def train_hooks(store_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], arch: str, *,
                hooks: Sequence[str], sync: Sync = LOCAL, **train_kwargs: Any) -> dict[str, Path]:
    """Train one ``arch`` dictionary per hook, this rank's hooks only; returns ``{hook: run dir}`` of all.

    ``train_kwargs`` go to ``train_on_store`` (same for every hook). Each run is resumable on its own, so
    a rerun with a different world size skips finished hooks and resumes interrupted ones.
    """
    from mechscope.dictionaries.io import atomic_write_json
    from mechscope.experiments.dictionaries import train_on_store

    names = list(hooks)
    sync.agree(names, "the hook list")
    for h in owned(names, sync):
        train_on_store(Path(store_dir), hook_dir(out_dir, h), arch, hooks=[h], **train_kwargs)
    sync.barrier()
    runs = {h: hook_dir(out_dir, h) for h in names}
    if sync.is_writer:
        atomic_write_json(Path(out_dir) / "hooks.json", {"arch": arch, "world_size": sync.world_size,
                                                         "runs": {h: str(p.name) for h, p in runs.items()},
                                                         "owner": {h: i % sync.world_size for i, h in enumerate(names)}})
    return runs


def harvest_distributed(model: Any, hooks: Sequence[str], n_tokens: int, out: str | os.PathLike[str], *,
                        sync: Sync = LOCAL, corpus: str = "stdlib-docs", seq_len: int = 128, batch_size: int = 16,
                        tokenizer: str = "auto", shard_rows: int = 65536, seed: int = 0,
                        model_name: str | None = None, progress: bool = True, dtype: str = "float32") -> Any:
    """``experiments.dictionaries.harvest`` with the shards dealt over the ranks of ``sync``."""
    from mechscope.activations.sharded import harvest_sharded

    src = corpus_source(model, hooks, corpus=corpus, seq_len=seq_len, batch_size=batch_size, tokenizer=tokenizer,
                        seed=seed)
    return harvest_sharded(src, out, n_tokens, sync=sync, shard_rows=shard_rows, progress=progress, dtype=dtype,
                           metadata=harvest_metadata(model, model_name, corpus))


def corpus_source(model: Any, hooks: Sequence[str], *, corpus: str, seq_len: int, batch_size: int, tokenizer: str,
                  seed: int) -> Any:
    """The ``ActivationSource`` ``dict harvest`` reads: the corpus's training split, shuffled chunks."""
    from mechscope.activations.source import ActivationSource, SourceConfig
    from mechscope.experiments.dictionaries import corpus_split

    split = corpus_split(model, corpus, "train", tokenizer)
    return ActivationSource(model, hooks, split, SourceConfig(seq_len=seq_len, batch_size=batch_size, seed=seed))


def harvest_metadata(model: Any, model_name: str | None, corpus: str) -> dict[str, Any]:
    """The free metadata ``dict harvest`` records in a store's manifest."""
    model_dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return {"model": model_name, "corpus": corpus, "split": "train", "model_dtype": model_dtype}


__all__ = ["corpus_source", "harvest_distributed", "harvest_metadata", "hook_dir", "train_hooks"]
