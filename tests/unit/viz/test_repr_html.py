"""Result objects render inline in Jupyter: ``_repr_html_`` of SweepResult, EdgeScores, ActivationCache."""

from __future__ import annotations

import torch

from mechscope.circuits.discover import discover
from mechscope.interventions.patching import patch_sweep
from mechscope.viz.report import esc
from tests.conftest import tiny_model
from tests.unit.circuits.helpers import logit_diff_metric, pair


def test_sweep_result_html_names_baselines_top_sites_and_embeds_the_heatmap() -> None:
    model = tiny_model("gpt2")
    clean, corrupted = pair(2)
    res = patch_sweep(model, clean, corrupted, lambda logits: logits[..., 3] - logits[..., 7], "resid_pre",
                      pos_labels=list("abcdef"))
    html = res._repr_html_()
    assert html.startswith("<p><b>SweepResult</b>") and "resid_pre" in html and "denoise" in html
    assert f"clean {res.clean:+.3f}" in html and f"corrupted {res.corrupted:+.3f}" in html
    (names, _), = res.top(1)
    assert f"layer {names[0]}, pos {names[1]}" in html  # the strongest site is listed
    assert html.count("<tr>") == 1 + 5 and 'src="data:image/png;base64,' in html


def test_edge_scores_html_lists_the_ten_largest_edges_in_order() -> None:
    model = tiny_model("gpt2")
    clean, corrupted = pair(2)
    scores = discover(model, clean, corrupted, logit_diff_metric(), method="eap")
    html = scores._repr_html_()
    ranked = scores.ranked(10)
    assert f"{len(scores.graph.edges)} edges" in html and "(eap)" in html
    assert f"clean {scores.info['clean']:+.3f}" in html
    positions = [html.index(f"<td>{esc(name)}</td>") for name, _ in ranked]
    assert positions == sorted(positions) and html.count("<tr>") == 1 + 10


def test_activation_cache_html_lists_names_shapes_and_truncates() -> None:
    model = tiny_model("gpt2")
    _, cache = model.run_with_cache(torch.tensor([[1, 2, 3]]))
    html = cache._repr_html_(max_rows=3)
    first = next(iter(cache))
    assert f"{len(cache)} activations" in html and f"<td>{first}</td>" in html
    assert f"<td>{tuple(cache[first].shape)}</td>" in html and "float32" in html
    assert html.count("<tr>") == 1 + 3 and f"and {len(cache) - 3} more" in html
    small = cache._repr_html_()
    assert "more" not in small if len(cache) <= 40 else "more" in small
