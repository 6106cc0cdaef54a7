"""Streaming training from the model equals store-based training on the same data order; the spill is a store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechscope.activations.store import ActivationStore
from mechscope.errors import ConfigError
from mechscope.experiments.dictionaries import train_on_store
from mechscope.experiments.streaming import rechunk, train_streaming

from . import workers as w

KW = dict(d_sae=16, options={"k": 2}, batch_size=16, steps=12, buffer_rows=48, progress=False)


def test_rechunk() -> None:
    blocks = [torch.arange(5.0), torch.arange(5.0, 12.0), torch.arange(12.0, 13.0)]
    got = list(rechunk(blocks, 4))
    assert [b.tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]  # 12 dropped
    pairs = list(rechunk([(torch.arange(3.0), -torch.arange(3.0))] * 2, 4))
    assert len(pairs) == 1 and pairs[0][1].tolist() == [-0.0, -1.0, -2.0, -0.0]


def test_streaming_equals_store_training(tmp_path: Path) -> None:
    n = 400
    src = w.source()
    src_one = type(src)(src.model, [w.HOOKS[0]], w.token_split(), src.cfg)
    d_stream = train_streaming(src_one, tmp_path / "stream", "topk", n_tokens=n, spill=tmp_path / "spill",
                               shard_rows=64, **KW)
    src.harvest(tmp_path / "store", n, shard_rows=64, progress=False)
    d_store = train_on_store(tmp_path / "store", tmp_path / "from_store", "topk", hooks=[w.HOOKS[0]],
                             shuffle_shards=False, **KW)
    for k, v in d_store.state_dict().items():
        assert torch.equal(v, d_stream.state_dict()[k]), k
    spill, store = ActivationStore.open(tmp_path / "spill"), ActivationStore.open(tmp_path / "store")
    assert spill.complete and spill.n_rows == n
    for i in range(len(store.manifest["shards"])):
        assert torch.equal(spill.read_shard(i)[w.HOOKS[0]], store.read_shard(i)[w.HOOKS[0]])
    with pytest.raises(ConfigError, match="already holds a store"):
        train_streaming(src_one, tmp_path / "again", "topk", n_tokens=n, spill=tmp_path / "spill", **KW)
    with pytest.raises(ConfigError, match="ran out after"):
        train_streaming(src_one, tmp_path / "short", "topk", n_tokens=100, **KW)
