"""The logits-edge comparison on the planted circuit, whose one logits edge (``m1->logits``) is known."""

from mechscope.circuits.truth.planted import planted_truth
from mechscope.experiments.circuits_ioi.analysis import logits_edge_auc


def test_logits_edge_auc_finds_the_planted_logits_edge() -> None:
    t = planted_truth()
    res = logits_edge_auc(t, {"eap": ("eap", {}), "acdc": ("acdc", {"threshold": 0.01, "objective": "metric"})})
    assert res["auc_logits_edges"]["exact"] == 1.0
    assert res["exact_top10"][0][0] == "m1->logits"
    assert res["acdc_kept_truth"]["acdc"] == ["m1->logits"]
    assert res["auc_logits_edges"]["acdc"] == 1.0
