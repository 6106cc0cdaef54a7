"""Attribution patching equals exact patching where the metric is linear in the patched activation."""

from __future__ import annotations

import math

import pytest
import torch

from mechscope.interventions.attribution import activations_and_grads, attribution_sweep, compare_with_exact
from mechscope.interventions.patching import patch_sweep
from mechscope.metrics import LogitDiff
from tests.unit.interventions.conftest import gpt2_like, linear_readout


@pytest.mark.parametrize("sweep", ["attn_out", "resid_post", "z", "z_by_pos"])
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_attribution_exact_when_linear(pair, sweep, direction):
    model = linear_readout()
    clean, corrupted, answer, wrong = pair
    metric = LogitDiff(answer, wrong)
    last = [model.cfg.n_layers - 1]  # no final norm, no later layer: logits are linear here
    exact = patch_sweep(model, clean, corrupted, metric, sweep, direction=direction, layers=last)
    attr = attribution_sweep(model, clean, corrupted, metric, sweep, direction=direction, layers=last)
    assert exact.values.abs().max() > 0.01  # the test is not vacuous
    torch.testing.assert_close(attr.values, exact.values, atol=2e-5, rtol=1e-5)
    assert (attr.clean, attr.corrupted) == pytest.approx((exact.clean, exact.corrupted))


def test_attribution_differs_where_nonlinear_but_correlates(pair):
    model = gpt2_like()
    clean, corrupted, answer, wrong = pair
    res = compare_with_exact(model, clean, corrupted, LogitDiff(answer, wrong), sweeps=("resid_pre", "z"))
    for r in res.values():
        assert not math.isnan(r["correlation"]) and -1.0 <= r["correlation"] <= 1.0
        assert r["attribution"].values.shape == r["exact"].values.shape
    assert not torch.allclose(res["resid_pre"]["attribution"].values, res["resid_pre"]["exact"].values, atol=1e-4)


def test_gradients_leave_parameters_alone_and_work_when_frozen(pair):
    model = gpt2_like()
    clean, _, answer, wrong = pair
    metric = LogitDiff(answer, wrong)
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.attn.hook_z"]
    _, g1 = activations_and_grads(model, clean, metric, hooks)
    assert all(p.grad is None for p in model.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    _, g2 = activations_and_grads(model, clean, metric, hooks)
    for h in hooks:
        torch.testing.assert_close(g1[h], g2[h])
    # finite-difference check of one gradient entry
    eps, h = 1e-3, hooks[0]
    _, cache = model.run_with_cache(clean, names=[h])

    def value(delta: float) -> float:
        def bump(x, hook):
            y = x.clone()
            y[:, 2, 5] += delta
            return y
        with torch.no_grad():
            return float(metric(model.run_with_hooks(clean, fwd=[(h, bump)])[:, -1]).mean())

    fd = (value(eps) - value(-eps)) / (2 * eps)
    assert fd == pytest.approx(float(g2[h][:, 2, 5].sum()), rel=2e-2, abs=1e-3)
