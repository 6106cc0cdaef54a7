"""Scaling laws of dictionaries: fit loss against width and training tokens, find the compute-optimal split.

A sweep trains one dictionary per (width ``N`` latents, tokens ``D``) cell and records its held-out loss
``L`` (fraction of variance unexplained). Two fits, as in Scaling Monosemanticity / Chinchilla:

* :func:`fit_surface` — ``L(N, D) = E + A / N^alpha + B / D^beta`` by non-linear least squares in log
  space. Minimising it at fixed compute ``C ∝ N·D`` gives ``N_opt ∝ C^(beta/(alpha+beta))`` and
  ``D_opt ∝ C^(alpha/(alpha+beta))``; confidence intervals come from a residual bootstrap (basic
  intervals, which correct for the bias of the non-linear fit).
* :func:`fit_power_law` — ``y = a · x^b`` (log-log least squares, t-based CI of ``b``), used on the
  compute frontier (:func:`frontier`: the runs no cheaper run beats): loss vs compute, width vs compute.

Compute is counted as ``6 · D · N · d_in`` (dense encoder + decoder, forward and backward), the
convention of the papers; TopK training is cheaper, but the exponents do not depend on the constant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mechscope.errors import ConfigError

Values = Sequence[float] | np.ndarray


@dataclass(frozen=True)
class PowerLaw:
    """``y = prefactor * x ** exponent`` with a ``ci`` (level ``level``) on the exponent."""

    prefactor: float
    exponent: float
    exponent_ci: tuple[float, float]
    r2: float
    n: int
    level: float = 0.95

    def __call__(self, x: float) -> float:
        return self.prefactor * x ** self.exponent


def fit_power_law(x: Values, y: Values, level: float = 0.95) -> PowerLaw:
    """Least squares of ``log y = log a + b log x``; needs >= 3 positive points."""
    from scipy import stats

    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    if lx.size < 3 or not (np.isfinite(lx).all() and np.isfinite(ly).all()):
        raise ConfigError(f"a power-law fit needs >= 3 points with positive x and y, got {len(lx)}")
    res = stats.linregress(lx, ly)
    t = stats.t.ppf(0.5 + level / 2, lx.size - 2)
    half = t * res.stderr if lx.size > 2 else math.inf
    return PowerLaw(float(math.exp(res.intercept)), float(res.slope), (float(res.slope - half), float(res.slope + half)),
                    float(res.rvalue ** 2), int(lx.size), level)


@dataclass(frozen=True)
class Surface:
    """``L(N, D) = E + A / N^alpha + B / D^beta`` with bootstrap CIs (see module docstring)."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float
    alpha_ci: tuple[float, float]
    beta_ci: tuple[float, float]
    width_exponent: float
    """``N_opt ∝ C^width_exponent`` = beta / (alpha + beta)."""
    width_exponent_ci: tuple[float, float]
    tokens_exponent: float
    """``D_opt ∝ C^tokens_exponent`` = alpha / (alpha + beta)."""
    rmse_log: float
    n: int

    def loss(self, n: float, d: float) -> float:
        return self.E + self.A / n ** self.alpha + self.B / d ** self.beta

    def optimal_width(self, compute_nd: float) -> float:
        """Width minimising the loss at ``N * D = compute_nd`` (closed form of the surface)."""
        a, b = self.alpha, self.beta
        g = (a * self.A / (b * self.B)) ** (1 / (a + b))
        return float(g * compute_nd ** (b / (a + b)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _surface_model(nd: np.ndarray, logE: float, logA: float, alpha: float, logB: float, beta: float) -> np.ndarray:
    n, d = nd
    return np.log(np.exp(logE) + np.exp(logA) / n ** alpha + np.exp(logB) / d ** beta)


def _fit_once(n: np.ndarray, d: np.ndarray, loss: np.ndarray, p0: Values) -> np.ndarray:
    from scipy.optimize import curve_fit

    popt, _ = curve_fit(_surface_model, np.stack([n, d]), np.log(loss), p0=list(p0), maxfev=20000,
                        bounds=([-30, -30, 0.0, -30, 0.0], [5, 30, 3.0, 30, 3.0]))
    return np.asarray(popt)


def fit_surface(widths: Values, tokens: Values, losses: Values, *, n_boot: int = 200,
                level: float = 0.95, seed: int = 0) -> Surface:
    """Fit the loss surface to a sweep (>= 6 runs spanning >= 2 widths and >= 2 token counts)."""
    n, d, loss = (np.asarray(v, dtype=float) for v in (widths, tokens, losses))
    if not (n.size == d.size == loss.size) or n.size < 6 or len(set(n)) < 2 or len(set(d)) < 2:
        raise ConfigError(f"fit_surface needs >= 6 runs over >= 2 widths and >= 2 token counts, got {n.size} runs, "
                          f"widths {sorted(set(n))}, tokens {sorted(set(d))}")
    if (loss <= 0).any() or (n <= 0).any() or (d <= 0).any():
        raise ConfigError("widths, tokens and losses must all be positive")
    p0 = (math.log(max(loss.min() * 0.5, 1e-6)), 0.0, 0.5, 0.0, 0.5)
    best = _fit_once(n, d, loss, p0)
    resid = np.log(loss) - _surface_model(np.stack([n, d]), *best)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):  # residual bootstrap: refit on the fitted surface plus resampled residuals
        fake = np.exp(_surface_model(np.stack([n, d]), *best) + rng.choice(resid, size=resid.size))
        try:
            boots.append(_fit_once(n, d, fake, best))
        except RuntimeError:  # a resample the optimiser cannot fit is left out
            continue
    bs = np.asarray(boots) if boots else best[None]
    lo, hi = 50 * (1 - level), 50 * (1 + level)

    def ci(v: np.ndarray, est: float) -> tuple[float, float]:  # basic bootstrap: reflects the estimator's bias
        return float(2 * est - np.percentile(v, hi)), float(2 * est - np.percentile(v, lo))

    a, b = best[2], best[4]
    width_exp = bs[:, 4] / np.maximum(bs[:, 2] + bs[:, 4], 1e-12)
    w_est = float(b / max(a + b, 1e-12))
    return Surface(float(math.exp(best[0])), float(math.exp(best[1])), float(a), float(math.exp(best[3])), float(b),
                   ci(bs[:, 2], a), ci(bs[:, 4], b), w_est, ci(width_exp, w_est),
                   float(a / max(a + b, 1e-12)), float(np.sqrt(np.mean(resid ** 2))), int(n.size))


def compute_flops(width: float, tokens: float, d_in: int) -> float:
    """Training FLOPs of a dense dictionary: ``6 * tokens * width * d_in``."""
    return 6.0 * tokens * width * d_in


def frontier(runs: Sequence[dict[str, float]]) -> list[dict[str, float]]:
    """Runs on the compute frontier: no run with at most their compute has a lower loss (sorted by compute)."""
    order = sorted(runs, key=lambda r: (r["compute"], r["loss"]))
    out: list[dict[str, float]] = []
    for r in order:
        if not out or r["loss"] < out[-1]["loss"]:
            out.append(r)
    return out


def scaling_summary(runs: Sequence[dict[str, float]], d_in: int, *, n_boot: int = 200) -> dict[str, Any]:
    """Everything ``mechscope dict scaling --json`` prints, from sweep rows ``{width, tokens, loss, ...}``."""
    rows = [dict(r) | {"compute": compute_flops(r["width"], r["tokens"], d_in)} for r in runs]
    surf = fit_surface([r["width"] for r in rows], [r["tokens"] for r in rows], [r["loss"] for r in rows],
                       n_boot=n_boot)
    front = frontier(rows)
    out: dict[str, Any] = {"n_runs": len(rows), "d_in": d_in, "surface": surf.to_dict(), "frontier": front}
    top = max(r["width"] * r["tokens"] for r in rows)  # compute-optimal points at the sweep's largest budget and beyond
    out["compute_optimal"] = [{"compute": compute_flops(n, c / n, d_in), "width": n, "tokens": c / n,
                               "loss": surf.loss(n, c / n)}
                              for c in (top, 10 * top, 100 * top) for n in [surf.optimal_width(c)]]
    if len(front) >= 3:
        lc = fit_power_law([r["compute"] for r in front], [r["loss"] for r in front])
        wc = fit_power_law([r["compute"] for r in front], [r["width"] for r in front])
        out |= {"loss_vs_compute": asdict(lc), "width_vs_compute": asdict(wc)}
    out["by_width"] = width_stats(rows)
    widths = [r["width"] for r in out["by_width"] if r.get("freq_median", 0) > 0]
    if len(widths) >= 3:
        out["freq_median_vs_width"] = asdict(fit_power_law(
            widths, [r["freq_median"] for r in out["by_width"] if r.get("freq_median", 0) > 0]))
    return out


def width_stats(runs: Sequence[dict[str, float]]) -> list[dict[str, float]]:
    """Per width, the longest-trained run's dead fraction and firing-frequency quantiles (when recorded)."""
    keys = ("tokens", "loss", "dead_fraction", "freq_p10", "freq_median", "freq_p90")
    best: dict[float, dict[str, float]] = {}
    for r in runs:
        if r["width"] not in best or r["tokens"] > best[r["width"]]["tokens"]:
            best[r["width"]] = r
    return [{"width": w} | {k: best[w][k] for k in keys if k in best[w]} for w in sorted(best)]


# -- feature splitting -----------------------------------------------------------------------------------
def match_latents(w_small: np.ndarray | Any, w_large: np.ndarray | Any, threshold: float = 0.5) -> dict[str, Any]:
    """Match each latent of a larger dictionary to its closest small-dictionary latent by decoder cosine.

    ``w_small [n_small d]`` and ``w_large [n_large d]`` are decoder rows. Returns ``parent [n_large]`` (the
    best small latent, -1 when the best cosine is below ``threshold``), ``cosine [n_large]``, ``children``
    ``[n_small]`` (how many large latents each small latent split into) and ``split_histogram`` (how many
    small latents have 0, 1, 2, ... children).
    """
    import torch

    ws = torch.as_tensor(np.asarray(w_small, dtype=np.float32))
    wl = torch.as_tensor(np.asarray(w_large, dtype=np.float32))
    if ws.ndim != 2 or wl.ndim != 2 or ws.shape[1] != wl.shape[1]:
        raise ConfigError(f"decoders must be [n d] with the same d, got {tuple(ws.shape)} and {tuple(wl.shape)}")
    cos = torch.nn.functional.normalize(wl, dim=1) @ torch.nn.functional.normalize(ws, dim=1).T  # [n_large n_small]
    best, parent = cos.max(dim=1)
    parent = torch.where(best >= threshold, parent, torch.full_like(parent, -1))
    children = torch.bincount(parent[parent >= 0], minlength=ws.shape[0])
    hist = torch.bincount(children)
    return {"parent": parent.numpy(), "cosine": best.numpy(), "children": children.numpy(),
            "split_histogram": hist.tolist()}


__all__ = ["PowerLaw", "Surface", "compute_flops", "fit_power_law", "fit_surface", "frontier", "match_latents",
           "scaling_summary", "width_stats"]
