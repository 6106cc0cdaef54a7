"""The IOI study's head report on a tiny model (the SmolLM2 run itself is recorded in docs/circuits.md)."""

from __future__ import annotations

from mechscope.circuits.discover import discover
from mechscope.experiments.circuits_ioi import IOI_HEADS, head_report
from tests.conftest import tiny_model
from tests.unit.circuits.helpers import logit_diff_metric, pair


def test_head_report_ranks_heads_by_node_score() -> None:
    model = tiny_model("gpt2")
    clean, corrupted = pair()
    s = discover(model, clean, corrupted, logit_diff_metric(), method="eap")
    rep = head_report(s, s.top(20))
    nodes = s.node_scores()
    top = rep["top_heads_by_node_score"]
    assert [abs(v) for _, v in top] == sorted((abs(v) for _, v in top), reverse=True)
    assert top[0][0] == max((n for n in nodes if n.startswith("a")), key=lambda n: abs(nodes[n]))
    assert set(rep["roles"]) == set(IOI_HEADS)  # SmolLM2's heads do not exist here: reported, not in circuit
    assert all(not h["in_circuit"] and h["node_rank"] is None for hs in rep["roles"].values() for h in hs)
    assert all(e.endswith("->logits") for e, _ in rep["top_direct_to_logits_in_circuit"])


def test_config_rejects_an_unknown_selection() -> None:
    import pytest

    from mechscope.errors import ConfigError
    from mechscope.experiments.circuits_ioi import CircuitIOIConfig

    assert CircuitIOIConfig().selection == "signed"
    with pytest.raises(ConfigError, match="selection must be one of"):
        CircuitIOIConfig(selection="best")
