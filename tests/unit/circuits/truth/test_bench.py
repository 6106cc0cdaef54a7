"""The benchmark runner: ROC AUC by hand-checkable cases, and a real run on two ground truths."""

from __future__ import annotations

import pytest

from mechscope.circuits.bench import roc_auc, run_bench, table
from mechscope.errors import ConfigError


def test_roc_auc_counts_pairs_and_ties():
    assert roc_auc({"a": 3.0, "b": -2.0, "c": 1.0, "d": 0.0}, {"a", "b"}) == 1.0  # |score| ranks
    assert roc_auc({"a": 0.0, "b": 1.0}, {"a"}) == 0.0
    assert roc_auc({"a": 1.0, "b": 1.0, "c": 0.0}, {"a"}) == 0.75  # a tie with a negative counts 1/2
    # 2 positives x 3 negatives: p1 beats all 3, p2 beats 1 -> 4/6
    assert roc_auc({"p1": 5, "p2": 1.5, "n1": 2, "n2": 3, "n3": 1}, {"p1", "p2"}) == pytest.approx(4 / 6)
    with pytest.raises(ConfigError, match="not in the scored graph"):
        roc_auc({"a": 1.0}, {"z"})


def test_bench_rows_on_compiled_and_planted_truths():
    rows = run_bench(["exact", "eap", "eap-ig"], ["rasp:hist", "rasp:shift2"])
    assert [(r["truth"], r["method"]) for r in rows] == [
        ("rasp:hist", "exact"), ("rasp:hist", "eap"), ("rasp:hist", "eap-ig"),
        ("rasp:shift2", "exact"), ("rasp:shift2", "eap"), ("rasp:shift2", "eap-ig")]
    by = {(r["truth"], r["method"]): r for r in rows}
    for t in ("rasp:hist", "rasp:shift2"):
        assert by[t, "exact"]["roc_auc"] == 1.0 and by[t, "exact"]["faithfulness"] == pytest.approx(1.0, abs=1e-3)
        assert by[t, "eap-ig"]["roc_auc"] == 1.0
        assert by[t, "exact"]["truth_faithfulness"] == pytest.approx(1.0, abs=1e-3)
    # hist decodes its count with a staircase MLP whose gradient is zero at every exact count: plain EAP
    # (gradient at the clean point) misses the edges behind it, EAP-IG integrates across the steps
    assert by["rasp:hist", "eap"]["roc_auc"] < 0.9
    assert "| rasp:hist | 4 / 8 | exact | 1.0000 | 1.000 |" in table(rows)


def test_bench_rejects_unknown_methods():
    with pytest.raises(ConfigError, match="did you mean 'eap-ig'"):
        run_bench(["eap_ig"], ["rasp:hist"])
