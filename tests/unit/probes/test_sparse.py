"""k-sparse probing: rankings find planted neurons; the MILP probe equals a brute-force optimum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from mechscope.errors import ConfigError
from mechscope.probes.sparse import RANKINGS, f1, f1_by_k, greedy_probe, milp_probe, rank_neurons
from tests.typecheck import ill_typed


def data(n=300, d=20, seed=0, noise=1.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, d, generator=g)
    x[:, 3] += 1.5 * y  # two informative neurons, each partly
    x[:, 7] -= 1.2 * y
    return x, y


@pytest.mark.parametrize("method", RANKINGS)
def test_rankings_find_planted_neurons(method):
    x, y = data()
    assert set(rank_neurons(x, y, method)[:2].tolist()) == {3, 7}


def test_f1_by_k_grows_and_greedy_picks_planted():
    x, y = data(n=600)
    res = f1_by_k(x[:400], y[:400], x[400:], y[400:], ks=(1, 2, 8))
    assert res[2][0] > res[1][0] and res[2][0] > 0.7
    assert set(greedy_probe(x[:400], y[:400], 2, list(range(20))).neurons) == {3, 7}


def brute_force(z: np.ndarray, y: np.ndarray, k: int, big_m: float, l1: float) -> float:
    """Min over every support of size <= k of the hinge-loss LP (the MILP with the support fixed)."""
    n, d = z.shape
    s = 2.0 * y - 1
    best = np.inf
    for size in range(0, k + 1):
        for sup in itertools.combinations(range(d), size):
            m = len(sup)
            zz = z[:, list(sup)]
            c = np.concatenate([np.full(2 * m, l1), [0.0], np.ones(n)])
            a = -np.hstack([s[:, None] * zz, -s[:, None] * zz, s[:, None], np.eye(n)])
            bounds = [(0, big_m)] * (2 * m) + [(None, None)] + [(0, None)] * n
            r = linprog(c, A_ub=a, b_ub=-np.ones(n), bounds=bounds, method="highs")
            best = min(best, r.fun)
    return best


def test_milp_is_optimal_on_a_brute_forced_case():
    g = torch.Generator().manual_seed(2)
    n, d, k = 40, 6, 2
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, d, generator=g) + 0.6 * y[:, None] * torch.tensor([1.0, -1.0, 0.5, 0.0, 0.3, 0.8])
    p = milp_probe(x, y, k, candidates=list(range(d)), big_m=5.0, l1=1e-3)
    xn = x.double().numpy()
    z = (xn - xn.mean(0)) / (xn.std(0) + 1e-8)
    want = brute_force(z, y.numpy(), k, 5.0, 1e-3)
    assert p.optimal and p.method == "milp" and len(p.neurons) <= k
    assert p.objective == pytest.approx(want, rel=1e-6, abs=1e-6)
    # k=1 cannot do better than k=2 (a property that would catch a wrong cardinality constraint)
    assert milp_probe(x, y, 1, candidates=list(range(d)), big_m=5.0).objective >= p.objective - 1e-9
    assert f1(p.predict(x), y) > 0.6


def test_bad_input_is_refused():
    x, y = data()
    with pytest.raises(ConfigError, match="binary labels"):
        rank_neurons(x, y * 2)
    with pytest.raises(ConfigError, match="k must be"):
        milp_probe(x, y, 0)
    with pytest.raises(ConfigError, match="ranking must be"), ill_typed():
        rank_neurons(x, y, "nope")  # type: ignore[arg-type]
