"""Memory budget: caches, sweeps and harvests are estimated from the registered hook shapes and refused
beyond the budget with a message saying what fits; sweep chunking counts the fixed costs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechscope.activations.source import ActivationSource, SourceConfig
from mechscope.cache.budget import ENV, cache_bytes, parse_budget
from mechscope.errors import ConfigError, MemoryBudgetError
from mechscope.interventions.patching import patch_sweep, row_bytes, sweep_kind
from mechscope.metrics import LogitDiff
from mechscope.models.transformer import HookedTransformer
from tests.conftest import tiny_cfg


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return HookedTransformer(tiny_cfg("llama", n_layers=3), seed=0).eval()


def test_estimate_equals_the_cache_it_predicts(model: HookedTransformer) -> None:
    toks = torch.randint(0, 50, (3, 7))
    _, cache = model.run_with_cache(toks)
    assert sum(cache_bytes(model, list(model.hook_dict), 3, 7).values()) == cache.nbytes()
    _, part = model.run_with_cache(toks, names=lambda n: "pattern" in n or "resid" in n, stop_at_layer=2)
    est = cache_bytes(model, model.hook_names(lambda n: "pattern" in n or "resid" in n), 3, 7, stop_at_layer=2)
    assert sum(est.values()) == part.nbytes()


def test_run_with_cache_refuses_beyond_the_budget_saying_what_fits(model: HookedTransformer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    toks = torch.randint(0, 50, (2, 30))
    need = sum(cache_bytes(model, list(model.hook_dict), 2, 30).values())
    with pytest.raises(MemoryBudgetError) as e:
        model.run_with_cache(toks, max_bytes=need // 2)
    msg = str(e.value)
    assert "What fits:" in msg and "positions" in msg and "stop_at_layer=" in msg and "hook names" in msg
    assert "MECHSCOPE_MEMORY_BUDGET" in msg
    # the suggested input length does fit
    n_pos = int(msg.split("inputs of at most ")[1].split()[0])
    model.run_with_cache(toks[:, :n_pos], max_bytes=need // 2)
    monkeypatch.setenv(ENV, str(need // 2))  # the environment sets the default budget
    with pytest.raises(MemoryBudgetError):
        model.run_with_cache(toks)
    model.run_with_cache(toks, max_bytes="off")
    monkeypatch.setenv(ENV, "off")
    model.run_with_cache(toks)


def test_budget_specs() -> None:
    assert parse_budget("1.5KiB") == 1536 and parse_budget("2GB") == 2 * 10**9 and parse_budget("off") is None
    assert 0 < parse_budget("10%") < parse_budget("20%")
    for bad in ("lots", "-1GB", 0, True):
        with pytest.raises(ConfigError):
            parse_budget(bad)


def test_sweep_chunks_count_the_fixed_costs(model: HookedTransformer) -> None:
    clean = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(1))
    corrupted = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(2))
    metric = LogitDiff(torch.tensor([1, 2]), torch.tensor([3, 4]))
    probe = patch_sweep(model, clean, corrupted, metric, "resid_pre", memory_mb=1e-6)
    fixed = probe.extra["fixed_bytes"]
    assert fixed > 0
    per_row = row_bytes(model, 6, sweep_kind("resid_pre"))
    res = patch_sweep(model, clean, corrupted, metric, "resid_pre", memory_mb=(fixed + 5 * per_row) / 2**20)
    assert res.extra["rows_per_chunk"] == 5
    torch.testing.assert_close(res.values, probe.values)


def test_path_patch_chunks_count_the_fixed_costs(model: HookedTransformer) -> None:
    from mechscope.interventions.path_patching import Receiver, _row_bytes, path_patch

    clean = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(1))
    corrupted = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(2))
    metric = LogitDiff(torch.tensor([1, 2]), torch.tensor([3, 4]))
    rec = [Receiver(hook="blocks.2.hook_resid_post")]
    probe = path_patch(model, clean, corrupted, metric, rec, memory_mb=1e-6)
    fixed, row = probe.extra["fixed_bytes"], _row_bytes(model, 6) * 2
    assert fixed > 0 and probe.extra["senders_per_chunk"] == 1
    res = path_patch(model, clean, corrupted, metric, rec, memory_mb=(fixed + 3 * row) / 2**20)
    assert res.extra["senders_per_chunk"] == 3
    torch.testing.assert_close(res.values, probe.values, equal_nan=True)


def test_sweep_and_harvest_refuse_beyond_the_budget(model: HookedTransformer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    clean = torch.randint(0, 50, (2, 6))
    metric = LogitDiff(torch.tensor([1, 2]), torch.tensor([3, 4]))
    src = ActivationSource(model, ["blocks.0.hook_resid_post"], torch.randint(0, 50, (8, 6)), SourceConfig())
    monkeypatch.setenv(ENV, "2KB")
    with pytest.raises(MemoryBudgetError, match="What fits"):
        patch_sweep(model, clean, clean.flip(0), metric, "z")
    with pytest.raises(MemoryBudgetError, match="shard_rows <="):
        src.harvest(tmp_path, 20, shard_rows=4096, progress=False)
    monkeypatch.setenv(ENV, "64KB")
    assert src.harvest(tmp_path, 20, shard_rows=16, progress=False).complete
