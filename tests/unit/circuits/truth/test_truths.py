"""Ground truths: registry, data, metric, and edges checked by an independent one-edge-at-a-time patcher
(every true edge changes the metric, every other edge of the graph changes it by exactly zero)."""

from __future__ import annotations

import pytest
import torch

from mechscope.circuits.truth import TRUTHS, GroundTruth, load_truth
from mechscope.circuits.truth.base import Contrast
from mechscope.errors import ConfigError, ModelFileError, ShapeError
from tests.typecheck import ill_typed
from tests.unit.circuits.truth.edge_oracle import all_edges, edge_effects

FAST = [n for n in TRUTHS if n.startswith("rasp:")] + ["planted"]


def test_registry_names_and_unknown_name():
    assert {"planted", "rasp:hist", "rasp:induction", "rasp:frac_prevs"} <= set(TRUTHS)
    assert sum(n.startswith("rasp:") for n in TRUTHS) >= 5
    with pytest.raises(ConfigError, match="Did you mean: planted"):
        load_truth("plantd")


@pytest.mark.parametrize("name", FAST)
def test_truth_edges_are_exactly_the_edges_with_an_effect(name):
    t = load_truth(name)
    assert isinstance(t, GroundTruth) and t.name == name and not t.model.training
    edges = all_edges(t.model)
    assert t.edges <= set(edges)
    with torch.no_grad():
        clean, corrupted = t.metric(t.model(t.clean)), t.metric(t.model(t.corrupted))
    assert clean.shape == (t.clean.shape[0],) and float(clean.mean()) > float(corrupted.mean()) + 0.5
    effects = edge_effects(t.model, t.clean, t.corrupted, t.metric, edges)
    for e, v in effects.items():
        if e in t.edges:
            assert abs(v) > 0.05, (e, v)
        else:
            assert abs(v) < 1e-5, (e, v)


def test_planted_distractors_are_random_but_cannot_reach_the_metric():
    t = load_truth("planted")
    distractor = t.model.blocks[0].attn.W_Q[1]
    assert float(distractor.detach().abs().sum()) > 1.0  # a real random head, not a zero one
    with torch.no_grad():
        base = t.metric(t.model(t.clean))
        with t.model.hooks(fwd=[("blocks.2.attn.hook_z", lambda z, hook: z * 0 + 3.0),
                                ("blocks.0.hook_mlp_out", lambda x, hook: x * 5)]):
            ablated = t.metric(t.model(t.clean))
    assert torch.allclose(base, ablated)


def test_metrics_check_shapes():
    m = Contrast(torch.zeros(2, 3, 4))
    assert m(torch.ones(5, 2, 3, 4)).shape == (5, 2)  # leading sweep axes pass through
    with pytest.raises(ShapeError, match="batch pos vocab"), ill_typed():
        m(torch.ones(2, 4, 4))
    t = load_truth("planted")
    with pytest.raises(ShapeError, match="same shape"), ill_typed():
        GroundTruth(name="x", model=t.model, clean=t.clean, corrupted=t.corrupted[:, :-1], metric=t.metric,
                    edges=t.edges, readout=-1, description="")


def test_induction_truth_caches_its_weights_atomically_and_refuses_a_model_without_the_heads(tmp_path, monkeypatch):
    from mechscope.circuits.truth.induction import InductionTruthConfig, induction_truth, trained_model

    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    cfg = InductionTruthConfig(steps=2, batch=8)  # far too short for induction heads to form
    first = trained_model(cfg)
    files = list((tmp_path / "truths").iterdir())
    assert [f.name for f in files] == [f"induction-{cfg.key()}.safetensors"]  # no temporary file left
    again = trained_model(cfg)  # read back, not retrained
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ConfigError, match="no previous-token head or no induction head"):
        induction_truth(cfg)
    files[0].write_bytes(b"not safetensors")
    with pytest.raises(ModelFileError, match="delete it to retrain"):
        trained_model(cfg)


@pytest.mark.slow
def test_induction_truth_of_the_trained_model(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    t = load_truth("induction")
    k_composition = [e for e in t.edges if e.startswith("a0.") and e.endswith("<k>")]
    assert k_composition and all(e.split("->")[1].startswith("a1.") for e in k_composition)
    with torch.no_grad():
        assert float(t.metric(t.model(t.clean)).mean()) > float(t.metric(t.model(t.corrupted)).mean()) + 1.0


@pytest.mark.slow
@pytest.mark.model
def test_ioi_truth_on_smollm2(smollm2):
    from mechscope.circuits.graph import Graph
    from mechscope.circuits.truth.ioi import EDGES, ioi_truth

    t = ioi_truth(smollm2)
    assert t.edges == EDGES and len(EDGES) == 7 and t.edges <= set(Graph.from_model(t.model).edge_names)
    with torch.no_grad():
        assert float(t.metric(t.model(t.clean)).mean()) > float(t.metric(t.model(t.corrupted)).mean()) + 1.0
