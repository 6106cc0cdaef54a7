"""k-sparse probing (Gurnee et al. 2023, "Finding Neurons in a Haystack"): which k neurons detect a feature.

Binary labels only. Four *rankings* score every neuron on the training split by itself:

* ``mean_diff``: |mean over positives - mean over negatives| / pooled std;
* ``f_stat``: the one-way ANOVA F statistic (positives vs negatives);
* ``mutual_info``: mutual information between the neuron and the label (k-NN estimate, scikit-learn);
* ``l1``: |weight| of an L1-regularised logistic regression on all neurons (scikit-learn, liblinear).

A ranking's top k neurons then get an ordinary logistic regression (``fit_on``), scored by F1 on test.

The *optimal* k-sparse probe is a mixed-integer program (hinge-loss SVM with a cardinality constraint):

    min  Σ_i ξ_i + c·Σ_j |w_j|        s.t.  y_i (w·x_i + b) >= 1 - ξ_i,  ξ >= 0,
         -M s_j <= w_j <= M s_j,      Σ_j s_j <= k,   s_j ∈ {0, 1}

over standardised features (the |w| term is split as w = w⁺ - w⁻ and breaks ties between equally good
supports). ``milp_probe`` solves it with ``scipy.optimize.milp`` (HiGHS) under a time limit over the
``n_candidates`` best neurons of a ranking; if HiGHS finds no feasible point in time, ``greedy_probe``
(forward selection by training loss among the candidates) answers instead, and the result says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechscope.errors import ConfigError, ShapeError

Ranking = Literal["mean_diff", "f_stat", "mutual_info", "l1"]
RANKINGS: tuple[str, ...] = ("mean_diff", "f_stat", "mutual_info", "l1")


def _check(x: Tensor, y: Tensor) -> tuple[np.ndarray, np.ndarray]:
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise ShapeError(f"need activations [n d] and one label per row; got {tuple(x.shape)} and {tuple(y.shape)}")
    yy = y.long().numpy()
    if set(np.unique(yy).tolist()) != {0, 1}:
        raise ConfigError(f"k-sparse probing needs binary labels with both 0 and 1 present, got {np.unique(yy)[:5]}")
    return x.double().numpy(), yy


def rank_neurons(x: Float[Tensor, "n d"], y: Int[Tensor, " n"], method: Ranking = "mean_diff", *,
                 seed: int = 0) -> Int[Tensor, " d"]:
    """Neuron indices, best first, by ``method`` (see the module docstring)."""
    xn, yn = _check(x, y)
    if method == "mean_diff":
        pos, neg = xn[yn == 1], xn[yn == 0]
        pooled = np.sqrt((pos.var(0) + neg.var(0)) / 2) + 1e-8
        s = np.abs(pos.mean(0) - neg.mean(0)) / pooled
    elif method == "f_stat":
        from sklearn.feature_selection import f_classif

        s = np.nan_to_num(f_classif(xn, yn)[0])
    elif method == "mutual_info":
        from sklearn.feature_selection import mutual_info_classif

        s = mutual_info_classif(xn, yn, random_state=seed)
    elif method == "l1":
        from sklearn.linear_model import LogisticRegression

        z = (xn - xn.mean(0)) / (xn.std(0) + 1e-8)
        clf = LogisticRegression(l1_ratio=1.0, C=0.1, solver="liblinear", random_state=seed).fit(z, yn)
        s = np.abs(clf.coef_[0])
    else:
        raise ConfigError(f"ranking must be one of {RANKINGS}, got {method!r}")
    return torch.from_numpy(np.argsort(-s, kind="stable").copy())


@dataclass(frozen=True)
class SparseProbe:
    """A k-sparse probe: ``neurons`` with a logistic / hinge classifier on their standardised values."""

    neurons: list[int]
    weight: list[float]
    bias: float
    mean: list[float]
    std: list[float]
    method: str
    """The ranking, ``milp`` (optimal over its candidates), or ``greedy`` (the fallback)."""
    optimal: bool = False
    """True when HiGHS proved optimality (``milp`` only)."""
    objective: float | None = None
    """The MILP objective (total hinge loss + L1 tie-break) when solved."""

    def predict(self, x: Float[Tensor, "n d"]) -> Int[Tensor, " n"]:
        z = (x[:, self.neurons].double() - torch.tensor(self.mean, dtype=torch.float64)) / torch.tensor(self.std, dtype=torch.float64)
        return ((z @ torch.tensor(self.weight, dtype=torch.float64) + self.bias) > 0).long()


def _stats(x: np.ndarray, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return x[:, idx].mean(0), x[:, idx].std(0) + 1e-8


def fit_on(x: Float[Tensor, "n d"], y: Int[Tensor, " n"], neurons: list[int], method: str = "given",
           c: float = 1.0) -> SparseProbe:
    """Logistic regression on the given neurons only (standardised)."""
    from sklearn.linear_model import LogisticRegression

    xn, yn = _check(x, y)
    mu, sd = _stats(xn, neurons)
    clf = LogisticRegression(C=c, max_iter=1000).fit((xn[:, neurons] - mu) / sd, yn)
    return SparseProbe(list(neurons), clf.coef_[0].tolist(), float(clf.intercept_[0]), mu.tolist(), sd.tolist(), method)


def greedy_probe(x: Float[Tensor, "n d"], y: Int[Tensor, " n"], k: int, candidates: list[int]) -> SparseProbe:
    """Forward selection: add, k times, the candidate that most lowers the logistic training loss."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    xn, yn = _check(x, y)
    chosen: list[int] = []
    for _ in range(min(k, len(candidates))):
        best, best_loss = -1, np.inf
        for j in candidates:
            if j in chosen:
                continue
            idx = chosen + [j]
            mu, sd = _stats(xn, idx)
            z = (xn[:, idx] - mu) / sd
            loss = log_loss(yn, LogisticRegression(max_iter=300).fit(z, yn).predict_proba(z))
            if loss < best_loss:
                best, best_loss = j, loss
        chosen.append(best)
    return fit_on(x, y, chosen, "greedy")


def milp_probe(x: Float[Tensor, "n d"], y: Int[Tensor, " n"], k: int, *, candidates: list[int] | None = None,
               n_candidates: int = 32, time_limit: float = 30.0, big_m: float = 20.0, l1: float = 1e-3,
               ranking: Ranking = "mean_diff") -> SparseProbe:
    """The optimal k-sparse hinge-loss probe over the candidates (MILP, HiGHS, time-limited); greedy if none found."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    xn, yn = _check(x, y)
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    cand = list(candidates) if candidates is not None else rank_neurons(x, y, ranking)[:n_candidates].tolist()
    if any(not 0 <= j < xn.shape[1] for j in cand):
        raise ConfigError(f"candidate neurons must lie in [0, {xn.shape[1]}), got {cand}")
    mu, sd = _stats(xn, cand)
    z = (xn[:, cand] - mu) / sd
    n, m = z.shape
    s = 2.0 * yn - 1.0
    # variables: w+ [m], w- [m], b, xi [n], sel [m]
    nv = 2 * m + 1 + n + m
    cost = np.concatenate([np.full(2 * m, l1), [0.0], np.ones(n), np.zeros(m)])
    margin = np.hstack([s[:, None] * z, -s[:, None] * z, s[:, None], np.eye(n), np.zeros((n, m))])
    link = np.hstack([np.eye(m), np.eye(m), np.zeros((m, 1 + n)), -big_m * np.eye(m)])  # w+ + w- <= M sel
    card = np.concatenate([np.zeros(2 * m + 1 + n), np.ones(m)])[None]
    cons = [LinearConstraint(margin, 1.0, np.inf), LinearConstraint(link, -np.inf, 0.0),
            LinearConstraint(card, 0.0, float(k))]
    lo = np.concatenate([np.zeros(2 * m), [-np.inf], np.zeros(n + m)])
    hi = np.concatenate([np.full(2 * m, big_m), [np.inf], np.full(n, np.inf), np.ones(m)])
    integrality = np.concatenate([np.zeros(nv - m), np.ones(m)])
    res = milp(cost, constraints=cons, bounds=Bounds(lo, hi), integrality=integrality,
               options={"time_limit": float(time_limit), "disp": False})
    if res.x is None:
        return greedy_probe(x, y, k, cand)
    w = res.x[:m] - res.x[m:2 * m]
    keep = [i for i in range(m) if res.x[2 * m + 1 + n + i] > 0.5 and abs(w[i]) > 1e-9][:k] or [int(np.argmax(np.abs(w)))]
    return SparseProbe([cand[i] for i in keep], [float(w[i]) for i in keep], float(res.x[2 * m]),
                       [float(mu[i]) for i in keep], [float(sd[i]) for i in keep], "milp",
                       optimal=res.status == 0, objective=float(res.fun))


def f1(pred: Int[Tensor, " n"], y: Int[Tensor, " n"]) -> float:
    """F1 of the positive class."""
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    return 2 * tp / max(2 * tp + fp + fn, 1)


def f1_by_k(x_train: Float[Tensor, "n d"], y_train: Int[Tensor, " n"], x_test: Float[Tensor, "m d"],
            y_test: Int[Tensor, " m"], ks: tuple[int, ...] = (1, 2, 3, 5, 8, 16),
            method: Ranking = "mean_diff") -> dict[int, tuple[float, list[int]]]:
    """Test F1 of a logistic probe on the top-k neurons of ``method`` for each k: ``{k: (f1, neurons)}``."""
    order = rank_neurons(x_train, y_train, method).tolist()
    out = {}
    for k in ks:
        p = fit_on(x_train, y_train, order[:k], method)
        out[k] = (f1(p.predict(x_test), y_test), order[:k])
    return out


__all__ = ["RANKINGS", "SparseProbe", "f1", "f1_by_k", "fit_on", "greedy_probe", "milp_probe", "rank_neurons"]
