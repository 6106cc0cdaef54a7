"""Scaling-law fits recover known exponents from synthetic sweeps (inside their CIs); latent matching across
widths recovers a planted split structure."""

from __future__ import annotations

import numpy as np
import pytest

from mechscope.dictionaries.scaling import (
    compute_flops,
    fit_power_law,
    fit_surface,
    frontier,
    match_latents,
    scaling_summary,
)
from mechscope.errors import ConfigError


def test_power_law_recovers_exponent() -> None:
    rng = np.random.default_rng(0)
    x = np.logspace(3, 7, 12)
    y = 3.0 * x ** -0.3 * np.exp(rng.normal(0, 0.02, x.size))
    fit = fit_power_law(x, y)
    assert fit.exponent_ci[0] < -0.3 < fit.exponent_ci[1] and abs(fit.exponent + 0.3) < 0.02
    assert fit.r2 > 0.99 and fit(1e5) == pytest.approx(3.0 * 1e5 ** -0.3, rel=0.05)
    with pytest.raises(ConfigError, match=">= 3 points"):
        fit_power_law([1, 2], [1, 2])


def _sweep(noise: float, seed: int = 0) -> tuple[list[float], list[float], list[float]]:
    rng = np.random.default_rng(seed)
    ns, ds, ls = [], [], []
    for n in (256, 512, 1024, 2048, 4096):
        for d in (2.5e5, 5e5, 1e6, 2e6, 4e6):
            ns.append(n)
            ds.append(d)
            ls.append((0.05 + 4.0 / n ** 0.6 + 30.0 / d ** 0.35) * np.exp(rng.normal(0, noise)))
    return ns, ds, ls


def test_surface_recovers_known_law() -> None:
    s = fit_surface(*_sweep(0.01), n_boot=60)
    assert s.alpha_ci[0] <= 0.6 <= s.alpha_ci[1] and s.beta_ci[0] <= 0.35 <= s.beta_ci[1]
    assert abs(s.alpha - 0.6) < 0.1 and abs(s.beta - 0.35) < 0.06
    want = 0.35 / 0.95
    assert abs(s.width_exponent - want) < 0.05 and s.width_exponent_ci[1] - s.width_exponent_ci[0] < 0.1
    assert s.rmse_log < 0.02
    # the closed-form optimum is the minimum of the fitted loss at fixed N * D
    c = 1e9
    n_opt = s.optimal_width(c)
    assert s.loss(n_opt, c / n_opt) <= min(s.loss(n, c / n) for n in (n_opt * 0.8, n_opt * 1.25))
    with pytest.raises(ConfigError, match=">= 6 runs"):
        fit_surface([1, 2], [1, 2], [1, 1])


def test_frontier_and_summary() -> None:
    rows = [{"compute": 1, "loss": 1.0}, {"compute": 2, "loss": 1.2}, {"compute": 3, "loss": 0.5},
            {"compute": 3, "loss": 0.7}, {"compute": 5, "loss": 0.4}]
    assert [r["compute"] for r in frontier(rows)] == [1, 3, 5]
    ns, ds, ls = _sweep(0.01)
    out = scaling_summary([{"width": n, "tokens": d, "loss": v} for n, d, v in zip(ns, ds, ls)], d_in=64, n_boot=20)
    assert out["n_runs"] == 25 and out["loss_vs_compute"]["exponent"] < 0 < out["width_vs_compute"]["exponent"]
    assert out["frontier"][0]["compute"] == compute_flops(256, 2.5e5, 64)
    opt = out["compute_optimal"]
    assert opt[1]["compute"] == pytest.approx(10 * opt[0]["compute"]) and opt[0]["loss"] > opt[1]["loss"]
    assert opt[1]["width"] / opt[0]["width"] == pytest.approx(10 ** out["surface"]["width_exponent"])
    # dead fraction and frequency per width come from each width's longest run; median frequency ~ k / N
    rows = [{"width": n, "tokens": d, "loss": 0.1, "dead_fraction": 0.01 * n / 256, "freq_median": 8 / n * (d / 1e6)}
            for n in (256, 512, 1024, 2048) for d in (1e5, 1e6)]
    out = scaling_summary(rows, d_in=64, n_boot=5)
    assert [r["tokens"] for r in out["by_width"]] == [1e6] * 4
    assert out["by_width"][-1]["dead_fraction"] == pytest.approx(0.08)
    assert out["freq_median_vs_width"]["exponent"] == pytest.approx(-1.0)


def test_match_latents_recovers_planted_splits() -> None:
    rng = np.random.default_rng(0)
    small = rng.normal(size=(6, 32))
    small /= np.linalg.norm(small, axis=1, keepdims=True)
    n_children = [1, 2, 3, 0, 4, 1]
    large = []
    for i, c in enumerate(n_children):
        for _ in range(c):
            v = small[i] + 0.3 * rng.normal(size=32) / np.sqrt(32)
            large.append(v / np.linalg.norm(v))
    large.append(rng.normal(size=32))  # a new direction matching nothing
    got = match_latents(small, np.stack(large), threshold=0.7)
    assert got["children"].tolist() == n_children
    assert got["parent"][-1] == -1 and got["cosine"][:-1].min() > 0.7
    assert got["split_histogram"] == [1, 2, 1, 1, 1]
    with pytest.raises(ConfigError, match="same d"):
        match_latents(small, np.ones((3, 5)))
