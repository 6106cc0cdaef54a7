"""The fast gradient path (receiver_grads) equals the patchable forward's mask gradient on every family."""

from __future__ import annotations

import pytest
import torch

from mechscope.circuits.gradient import _mask_grad, eap, eap_ig
from mechscope.circuits.graph import Graph
from mechscope.circuits.patchable import fixed_differences
from mechscope.circuits.problem import Problem
from tests.conftest import FAMILY_KINDS, tiny_model
from tests.unit.circuits.helpers import logit_diff_metric, pair


def _reference(problem: Problem, fractions: list[float]) -> torch.Tensor:
    """Sum over variants of d mean metric / d m through the per-head patchable forward (``fixed=``)."""
    g = problem.graph
    fixed = fixed_differences(problem.patch, problem.clean_outputs)
    row = torch.zeros(len(g.senders), 1, dtype=torch.float64)
    row[0] = 1.0
    masks = torch.stack([g.valid.double() * row * f for f in fractions])
    return _mask_grad(problem, masks, fixed)


@pytest.mark.parametrize("kind", FAMILY_KINDS)
@pytest.mark.parametrize("ablation", ["corrupted", "mean"])
def test_fast_eap_and_eap_ig_equal_the_patchable_gradient(kind: str, ablation: str) -> None:
    model = tiny_model(kind).double()
    clean, corrupted = pair(b=3, p=6, vocab=model.cfg.d_vocab)
    metric = logit_diff_metric()
    graph = Graph.from_model(model)
    fast = Problem(model, graph, clean, corrupted, metric, -1, ablation)  # type: ignore[arg-type]
    scores = eap(fast).scores
    ref = Problem(model, graph, clean, corrupted, metric, -1, ablation)  # type: ignore[arg-type]
    want = _reference(ref, [0.0])
    assert want.abs().max() > 1e-3  # the comparison is not vacuous
    torch.testing.assert_close(scores, want, rtol=1e-9, atol=1e-10)
    assert fast.clean_value == pytest.approx(ref.clean_value, abs=1e-12)  # EAP's forward was the clean one
    want_ig = _reference(ref, [2 / 3, 1 / 3, 0.0]) / 3
    for chunk in (1, 2):  # the clean step alone first (its outputs are the clean run), or with another step
        fresh = Problem(model, graph, clean, corrupted, metric, -1, ablation)  # type: ignore[arg-type]
        torch.testing.assert_close(eap_ig(fresh, steps=3, chunk=chunk).scores, want_ig, rtol=1e-9, atol=1e-10)
        assert fresh.clean_value == pytest.approx(ref.clean_value, abs=1e-12)
