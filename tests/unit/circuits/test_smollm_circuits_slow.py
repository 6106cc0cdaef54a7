"""SmolLM2 IOI (slow): EAP on the real model names the name movers and backup heads of docs/ioi.md."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_eap_on_smollm2_ioi_ranks_name_movers_and_backups_first(smollm2) -> None:
    from mechscope.circuits.discover import discover
    from mechscope.experiments.circuits_ioi import ioi_task

    clean, corrupted, metric = ioi_task(smollm2, 8)
    scores = discover(smollm2, clean, corrupted, metric, method="eap")
    assert len(scores.graph.edges) == 70651
    nodes = scores.node_scores()
    heads = sorted((n for n in nodes if n.startswith("a")), key=lambda n: -abs(nodes[n]))[:6]
    assert {"a23.h3", "a29.h1"} <= set(heads)  # the strongest name movers (docs/ioi.md)
    assert {"a24.h4", "a29.h0"} & set(heads)  # the negative heads that back them up
    assert nodes["a23.h3"] < 0 < nodes["a24.h4"]  # patching a name mover lowers the logit difference
