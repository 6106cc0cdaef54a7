"""Each fast method against the exact oracle where theory says they must agree, plus the contract's errors."""

from __future__ import annotations

import pytest
import torch

from mechscope.circuits.discover import discover
from mechscope.circuits.evaluate import evaluate, faithfulness_curve
from mechscope.circuits.graph import EdgeNameError, Graph
from mechscope.errors import ConfigError, ShapeError
from tests.conftest import tiny_model
from tests.typecheck import ill_typed
from tests.unit.circuits.helpers import linear_model, logit_diff_metric, pair


def test_eap_equals_exact_on_a_model_linear_in_the_masks() -> None:
    model = linear_model()
    clean, corrupted = pair()
    metric = logit_diff_metric()
    ex = discover(model, clean, corrupted, metric, method="exact")
    ea = discover(model, clean, corrupted, metric, method="eap")
    assert ex.scores.abs().max() > 0.05  # the comparison is not trivially 0 == 0
    torch.testing.assert_close(ea.scores, ex.scores, rtol=1e-4, atol=1e-5)


def test_eap_ig_one_step_is_eap_and_activations_variant_is_complete() -> None:
    model = tiny_model("gpt2")
    clean, corrupted = pair(2)
    metric = logit_diff_metric()
    ea = discover(model, clean, corrupted, metric, method="eap")
    ig1 = discover(model, clean, corrupted, metric, method="eap-ig", steps=1)
    torch.testing.assert_close(ig1.scores, ea.scores, rtol=1e-5, atol=1e-6)
    ig = discover(model, clean, corrupted, metric, method="eap-ig", steps=24, variant="activations", chunk=12)
    total = float(ig.scores.sum())
    assert total == pytest.approx(ig.info["corrupted"] - ig.info["clean"], rel=0.02, abs=1e-3)


def test_exact_and_eap_ig_agree_with_each_other_on_a_nonlinear_model() -> None:
    model = tiny_model("neox")
    clean, corrupted = pair(3)
    metric = logit_diff_metric()
    ex = discover(model, clean, corrupted, metric, method="exact", chunk=64)
    ig = discover(model, clean, corrupted, metric, method="eap-ig", steps=8)
    r = torch.corrcoef(torch.stack([ex.scores, ig.scores]))[0, 1]
    assert r > 0.9


def test_acdc_batched_equals_one_edge_at_a_time_bit_for_bit() -> None:
    model = tiny_model("llama", seed=1)  # grouped-query, gated MLP, RMSNorm
    clean, corrupted = pair(4)
    metric = logit_diff_metric()
    kw = dict(method="acdc", threshold=0.002)
    seq = discover(model, clean, corrupted, metric, batched=False, **kw)
    bat = discover(model, clean, corrupted, metric, batched=True, chunk=16, **kw)
    assert seq.kept == bat.kept
    assert 0 < len(seq.kept) < len(seq.graph.edges)  # a real decision, neither nothing nor everything
    assert torch.equal(seq.scores, bat.scores)
    assert bat.info["forwards"] < 0.7 * seq.info["forwards"]
    # each removal raised the KL by less than the threshold, so the pruned graph's KL is bounded by their sum
    removed = len(bat.graph.edges) - len(bat.kept)
    assert 0 <= bat.info["final_objective"] < 0.002 * removed


def test_evaluate_endpoints_and_faithfulness_curve() -> None:
    model = tiny_model("llama")
    clean, corrupted = pair(5)
    metric = logit_diff_metric()
    g = Graph.from_model(model)
    assert evaluate(model, clean, corrupted, metric, g.edge_names) == pytest.approx(1.0, abs=1e-4)
    assert evaluate(model, clean, corrupted, metric, []) == pytest.approx(0.0, abs=1e-4)
    ex = discover(model, clean, corrupted, metric, method="exact", chunk=128)
    curve = faithfulness_curve(model, clean, corrupted, metric, ex, fractions=[0.0, 0.1, 0.5, 1.0])
    assert curve.recovery[0] == pytest.approx(0.0, abs=1e-4) and curve.recovery[-1] == pytest.approx(1.0, abs=1e-4)
    assert curve.n_edges == [0, round(0.1 * len(g)), round(0.5 * len(g)), len(g)]
    top = ex.top(curve.n_edges[2])
    assert curve.recovery[2] == pytest.approx(evaluate(model, clean, corrupted, metric, top.edges), abs=1e-5)
    assert curve.cpr > 0.0 and curve.cmd >= 0.0


def test_mean_and_zero_ablation_normalise_to_everything_ablated() -> None:
    model = tiny_model("gpt2")
    clean, corrupted = pair(6)
    metric = logit_diff_metric()
    for ablation in ("mean", "zero", "resample"):
        assert evaluate(model, clean, corrupted, metric, [], ablation=ablation) == pytest.approx(0.0, abs=1e-4)


def test_clear_errors() -> None:
    model = tiny_model("llama")
    clean, corrupted = pair()
    metric = logit_diff_metric()
    g = Graph.from_model(model)
    with pytest.raises(EdgeNameError, match=r"a1\.h3->a1\.kv1<k>|Did you mean"):
        g.edge("a0.h3->a1.h3<k>")  # grouped-query: keys are per key-value head
    with pytest.raises(EdgeNameError, match="Did you mean"):
        evaluate(model, clean, corrupted, metric, ["a0.h1->a1.kv0<q>"])
    with ill_typed(), pytest.raises(ShapeError, match="same shape"):
        discover(model, clean, corrupted[:, :-1], metric, method="eap")
    with pytest.raises(ShapeError, match=r"one float per example"):
        discover(model, clean, corrupted, lambda logits: logits[:, -1, 3].mean(), method="eap")
    with pytest.raises(ShapeError, match=r"\[:, -1\]"):
        discover(model, clean, corrupted, lambda logits: logits[:, 4, 3], method="eap")
    with pytest.raises(ConfigError, match="unknown circuit method"):
        discover(model, clean, corrupted, metric, method="acdcc")
    with pytest.raises(ConfigError, match="has no option"):
        discover(model, clean, corrupted, metric, method="eap", steps=3)
    with ill_typed(), pytest.raises(ConfigError, match="ablation"):
        discover(model, clean, corrupted, metric, method="eap", ablation="bogus")  # type: ignore[arg-type]
