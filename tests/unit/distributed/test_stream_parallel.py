"""Streaming from the model under several ranks: data parallel (forward passes dealt out, rows all-gathered,
gradients all-reduced) equals one process on the same data order; hookpoint parallel fed by the model equals
training each hook's dictionary alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechscope.dictionaries.io import read_json
from mechscope.experiments.dictionaries import load_dictionary_dir
from mechscope.experiments.streaming import model_batches, train_hooks_streaming, train_streaming

from . import workers as w


def _close(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert (sa[k] - sb[k]).abs().max() <= 1e-6, k


@pytest.mark.parametrize("arch,run", [("topk", "stream_dp"), ("batchtopk", "stream_btk")])
def test_two_rank_streaming_equals_one_process(two_rank_runs: Path, tmp_path: Path, arch: str, run: str) -> None:
    ref = train_streaming(w.source(w.HOOKS[:1]), tmp_path / "one", arch, **w.STREAM)  # type: ignore[arg-type]
    got = load_dictionary_dir(two_rank_runs / run)
    _close(ref, got)
    assert not torch.equal(ref.W_dec, w.dictionary("topk").W_dec)  # it trained
    steps = [r.split(', "tokens_per_s"')[0] for r in (two_rank_runs / run / "metrics.jsonl").read_text().splitlines()]
    assert steps and all('"tokens": ' in r for r in steps)  # rank 0 logged global token counts


def test_hookpoint_parallel_from_the_model_equals_each_alone(two_rank_runs: Path, tmp_path: Path) -> None:
    root = two_rank_runs / "stream_hooks"
    info = read_json(root / "hooks.json")
    assert info["owner"] == {w.HOOKS[0]: 0, w.HOOKS[1]: 1} and info["source"] == "model"
    one = train_hooks_streaming(w.source(), tmp_path / "one_rank", "topk", **w.STREAM)  # type: ignore[arg-type]
    for h in w.HOOKS:
        alone = train_streaming(w.source([h]), tmp_path / h, "topk", **w.STREAM)  # type: ignore[arg-type]
        _close(alone, load_dictionary_dir(root / h))  # 2 ranks, one hook each
        _close(alone, load_dictionary_dir(one[h]))  # 1 rank driving both trainers in lockstep


def test_model_batches_local_is_the_source() -> None:
    src = w.source()
    a, b = next(iter(src.batches())), next(model_batches(src))
    assert all(torch.equal(a[h], b[h]) for h in w.HOOKS)
