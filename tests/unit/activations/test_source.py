"""ActivationSource: rows equal run_with_cache at kept positions, the forward stops after the last needed
block, and an interrupted harvest resumes into exactly the shards an uninterrupted one writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mechscope.activations.source import ActivationSource, SourceConfig, stop_layer
from mechscope.activations.store import ActivationStore
from mechscope.data.corpus import TokenSplit
from mechscope.errors import ConfigError, HookNameError
from mechscope.models.transformer import HookedTransformer
from tests.conftest import tiny_cfg

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return HookedTransformer(tiny_cfg("llama", n_layers=4), seed=0).eval()


def _split(n: int = 600) -> TokenSplit:
    rng = np.random.default_rng(0)
    return TokenSplit(rng.integers(0, 50, size=n).astype(np.uint16), 50, 3, 1)


def test_rows_match_cache(model: HookedTransformer) -> None:
    toks = torch.randint(0, 50, (5, 9), generator=torch.Generator().manual_seed(0))
    toks[1, 4:] = 7  # "padding"
    src = ActivationSource(model, HOOKS, toks, SourceConfig(batch_size=2, exclude_token_ids=(7,)))
    blocks = list(src.batches())
    assert len(blocks) == 3
    _, cache = model.run_with_cache(toks, names=HOOKS)
    keep = torch.ones(5, 9, dtype=torch.bool)
    keep[:, 0] = False
    keep &= toks != 7
    for h in HOOKS:
        torch.testing.assert_close(torch.cat([b[h] for b in blocks]), cache[h][keep])
    pairs = list(src)  # trainer view: tuples in hook order
    assert isinstance(pairs[0], tuple) and pairs[0][0].shape[1] == 32


def test_stops_after_last_needed_block(model: HookedTransformer) -> None:
    assert stop_layer(HOOKS, 4) == 2
    assert stop_layer(["hook_embed"], 4) == 0
    assert stop_layer(["blocks.3.hook_resid_post"], 4) is None
    assert stop_layer(["ln_final.hook_normalized"], 4) is None
    ran: list[str] = []
    src = ActivationSource(model, HOOKS, torch.zeros(1, 4, dtype=torch.long))
    with model.hooks(fwd=[(lambda n: n.endswith("hook_resid_pre"), lambda x, hook: ran.append(hook.name))]):
        list(src.batches())
    assert ran == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]  # blocks 2, 3 never ran


def test_corpus_sequences_bos_and_order(model: HookedTransformer) -> None:
    split = _split()
    src = ActivationSource(model, HOOKS[:1], split, SourceConfig(seq_len=10, prepend_bos=False, shuffle=False))
    assert src.n_sequences == 60
    torch.testing.assert_close(src.sequences(2, 4), torch.from_numpy(split.tokens[20:40].astype(np.int64)).view(2, 10))
    with pytest.raises(ConfigError, match="BOS"):
        ActivationSource(model, HOOKS[:1], split, SourceConfig(prepend_bos=True))  # no tokenizer
    shuffled = ActivationSource(model, HOOKS[:1], split, SourceConfig(seq_len=10, prepend_bos=False, seed=3))
    seqs = shuffled.sequences(0, 60)
    assert not torch.equal(seqs, src.sequences(0, 60))
    assert sorted(map(tuple, seqs.tolist())) == sorted(map(tuple, src.sequences(0, 60).tolist()))


def test_locate_row(model: HookedTransformer) -> None:
    toks = torch.randint(1, 50, (6, 5))
    toks[2, 1:] = 0  # sequence 2 yields no rows
    src = ActivationSource(model, HOOKS[:1], toks, SourceConfig(exclude_token_ids=(0,)))
    assert src.locate_row(0) == (0, 0)
    assert src.locate_row(5) == (1, 1)
    assert src.locate_row(8) == (3, 0)  # skips the empty sequence
    with pytest.raises(ConfigError, match="only 20 rows"):
        src.locate_row(20)


def test_harvest_resume_gives_identical_shards(model: HookedTransformer, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = SourceConfig(seq_len=12, batch_size=3, prepend_bos=False, exclude_token_ids=(5,))
    full = ActivationSource(model, HOOKS, _split(), cfg).harvest(tmp_path / "full", 200, shard_rows=64,
                                                                 progress=False)
    assert full.complete and full.n_rows == 200 and len(full.manifest["shards"]) == 4
    # interrupt: the 5th forward raises, after two shards (128 rows) reached the disk
    src = ActivationSource(model, HOOKS, _split(), cfg)
    calls = {"n": 0}
    real = src.activations

    def flaky(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(tokens)

    monkeypatch.setattr(src, "activations", flaky)
    with pytest.raises(KeyboardInterrupt):
        src.harvest(tmp_path / "resumed", 200, shard_rows=64, progress=False)
    partial = ActivationStore.open(tmp_path / "resumed")
    assert 0 < partial.n_rows < 200 and partial.n_rows % 64 == 0 and not partial.complete
    resumed = ActivationSource(model, HOOKS, _split(), cfg).harvest(tmp_path / "resumed", 200, shard_rows=64,
                                                                    progress=False)
    assert resumed.manifest["shards"] == full.manifest["shards"] and resumed.complete
    for i in range(4):
        a, b = full.read_shard(i), resumed.read_shard(i)
        for h in HOOKS:
            assert torch.equal(a[h], b[h])
    with pytest.raises(ConfigError, match="different source"):
        ActivationSource(model, HOOKS[:1], _split(), cfg).harvest(tmp_path / "full", 10, progress=False)


def test_errors(model: HookedTransformer, tmp_path: Path) -> None:
    with pytest.raises(HookNameError, match="Did you mean"):
        ActivationSource(model, ["blocks.0.hook_resid_pots"], torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ConfigError, match="seq_len"):
        SourceConfig(seq_len=1)
    src = ActivationSource(model, HOOKS[:1], torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ConfigError, match="ran out after 6 of 10"):
        src.harvest(tmp_path / "s", 10, progress=False)
    assert ActivationStore.open(tmp_path / "s").n_rows == 6
