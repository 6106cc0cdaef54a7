"""Choosing circuits from scores: connectivity pruning, greedy growth, signed ranking, batched evaluation."""

from __future__ import annotations

import pytest
import torch

from mechscope.circuits.discover import discover
from mechscope.circuits.evaluate import evaluate, evaluate_many, faithfulness_curve
from mechscope.circuits.graph import Graph
from mechscope.circuits.scores import EdgeScores
from mechscope.circuits.select import connected, greedy_order, select, select_mask
from mechscope.errors import ConfigError
from tests.conftest import tiny_model
from tests.typecheck import ill_typed
from tests.unit.circuits.helpers import logit_diff_metric, pair


def _keep(g: Graph, names: list[str]) -> torch.Tensor:
    keep = torch.zeros(g.n_edges, dtype=torch.bool)
    keep[g.indices(names)] = True
    return keep


def _names(g: Graph, keep: torch.Tensor) -> set[str]:
    return {g.edge_names[i] for i in keep.nonzero().flatten().tolist()}


def test_connected_keeps_only_edges_on_an_input_to_logits_path() -> None:
    g = Graph.from_model(tiny_model("llama"))  # 2 layers, 4 heads in 2 key-value groups, MLPs
    path = ["input->a0.kv0<v>", "a0.h1->m1", "m1->logits"]  # kv group 0 serves heads 0 and 1
    dangling_in = "a0.h2->logits"  # a0.h2 has no kept input: it computes from corrupted inputs only
    dangling_out = "input->a1.h3<q>"  # a1.h3 has no kept output
    got = connected(g, _keep(g, path + [dangling_in, dangling_out]))
    assert _names(g, got) == set(path)
    assert not connected(g, _keep(g, ["a0.h1->m1", "m1->logits"])).any()  # no path from the input
    # batched: one row per keep set
    rows = connected(g, torch.stack([_keep(g, path), _keep(g, [dangling_in])]))
    assert rows.sum(1).tolist() == [3, 0]


def _scores(kind: str = "llama") -> tuple[torch.nn.Module, EdgeScores]:
    model = tiny_model(kind, seed=2)
    clean, corrupted = pair(5, vocab=model.cfg.d_vocab)
    return model, discover(model, clean, corrupted, logit_diff_metric(), method="eap")


def test_pruned_selection_is_connected_within_budget_and_at_least_the_pruned_top_n() -> None:
    _, s = _scores()
    g = s.graph
    for n in (3, 10, 40):
        keep = select_mask(s, n, "pruned")
        assert int(keep.sum()) <= n and (n == 3 or int(keep.sum()) > 0)  # 3 may be too few for any path
        assert torch.equal(connected(g, keep), keep)  # every kept edge can matter
        top = select_mask(s, n, "abs")
        assert int(keep.sum()) >= int(connected(g, top).sum())  # refilling never loses a useful edge
        # it is the pruned top-k for the largest k whose pruned set fits the budget
        pruned = [connected(g, select_mask(s, k, "abs")) for k in range(n, g.n_edges + 1)]
        fits = [i for i, c in enumerate(pruned) if int(c.sum()) <= n]
        assert torch.equal(keep, pruned[fits[-1]])


def test_greedy_grows_from_the_logits() -> None:
    _, s = _scores()
    g = s.graph
    order = greedy_order(s, g.n_edges)
    assert sorted(order.tolist()) == list(range(g.n_edges))  # each edge once
    assert g.edge_names[int(order[0])].endswith("->logits")  # the largest |score| edge into the logits
    keep = select_mask(s, 20, "greedy")
    assert 0 < int(keep.sum()) <= 20 and torch.equal(connected(g, keep), keep)


def test_signed_selection_keeps_the_edges_that_support_the_behaviour() -> None:
    _, s = _scores()
    sign = 1.0 if s.info["corrupted"] >= s.info["clean"] else -1.0
    keep = select_mask(s, 10, "signed")
    chosen, rest = s.scores[keep] * sign, s.scores[~keep] * sign
    assert chosen.min() >= rest.max()
    bad = EdgeScores(s.graph, s.scores, "x", info={})
    with pytest.raises(ConfigError, match="baselines"):
        select_mask(bad, 5, "signed")
    with pytest.raises(ConfigError, match="selection"), ill_typed():
        select_mask(s, 5, "best")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="circuit size"):
        select(s, -1)


def test_evaluate_many_and_the_selected_curve_equal_evaluate() -> None:
    model, s = _scores("gpt2")
    clean, corrupted = pair(5, vocab=model.cfg.d_vocab)
    metric = logit_diff_metric()
    keeps = torch.stack([select_mask(s, n, how) for n, how in ((5, "abs"), (12, "pruned"), (12, "greedy"))])
    many = evaluate_many(model, clean, corrupted, metric, keeps, chunk=2)
    one = [evaluate(model, clean, corrupted, metric, _names(s.graph, k)) for k in keeps]
    assert many == pytest.approx(one, abs=1e-6)
    curve = faithfulness_curve(model, clean, corrupted, metric, s, fractions=(0.0, 0.2, 1.0), selection="pruned")
    assert curve.recovery[0] == pytest.approx(0.0, abs=1e-6) and curve.recovery[-1] == pytest.approx(1.0, abs=1e-5)
    mid = select(s, round(0.2 * s.graph.n_edges), "pruned")
    assert curve.n_edges[1] == len(mid)
    assert curve.recovery[1] == pytest.approx(evaluate(model, clean, corrupted, metric, mid.edges), abs=1e-6)
    with pytest.raises(ConfigError, match="keep must be"):
        evaluate_many(model, clean, corrupted, metric, keeps[:, :5])
