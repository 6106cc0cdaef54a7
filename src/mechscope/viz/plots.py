"""Static plots for circuit analysis (matplotlib object API on private figures; no global style changes).

Each function returns a ``matplotlib.figure.Figure`` to embed with ``viz.report.figure_html`` or save
with ``viz.report.save_figure``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mechscope.viz.report import new_figure


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def heatmap(values: Any, *, title: str = "", xlabel: str = "", ylabel: str = "", cmap: str = "viridis",
            annotate: bool = True, xticklabels: Sequence[str] | None = None,
            yticklabels: Sequence[str] | None = None, vmin: float | None = None, vmax: float | None = None) -> Any:
    """A labelled heatmap of a 2-D array (NaNs blank), with values written in the cells when small enough."""
    v = _np(values)
    rows, cols = v.shape
    fig = new_figure(min(1.0 + 0.55 * cols, 12), min(1.0 + 0.45 * rows, 10))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.ma.masked_invalid(v), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xticks(range(cols), labels=list(xticklabels) if xticklabels else list(range(cols)))
    ax.set_yticks(range(rows), labels=list(yticklabels) if yticklabels else list(range(rows)))
    if annotate and rows * cols <= 400:
        hi = np.nanmax(v) if np.isfinite(v).any() else 0.0
        for i in range(rows):
            for j in range(cols):
                if np.isfinite(v[i, j]):
                    ax.text(j, i, f"{v[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if v[i, j] > 0.6 * hi else "white")
    return fig


def phase_change_plot(steps: Sequence[int], icl: Sequence[float], induction: Sequence[float],
                      loss: Sequence[float] | None = None, marker: int | None = None,
                      shade_from: int | None = None, shade_label: str = "") -> Any:
    """ICL score and best induction-head score over training (twin axes), with the phase-change step marked
    and, from ``shade_from`` on, a shaded span (e.g. a cool-down on different data)."""
    fig = new_figure(7.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(steps, induction, color="#2b6cb0", marker=".", label="best layer-1 induction score")
    ax.set_xlabel("training step")
    ax.set_ylabel("induction score", color="#2b6cb0")
    ax.set_ylim(0, 1)
    ax2 = ax.twinx()
    ax2.plot(steps, icl, color="#c53030", marker=".", label="ICL score (late − early loss)")
    ax2.set_ylabel("ICL score (nats)", color="#c53030")
    if loss is not None:
        ax2.plot(steps, loss, color="#777", lw=1, ls="--", label="val loss (right axis)")
    if marker is not None:
        ax.axvline(marker, color="k", lw=1, ls=":", label=f"phase change (induction half-way, step {marker})")
        ax.text(marker, 0.95, f" step {marker}", va="top", fontsize=8)
    if shade_from is not None and len(steps):
        ax.axvspan(shade_from, max(steps), color="#888", alpha=0.15, lw=0)
        ax.text(shade_from, 0.97, f" {shade_label}", va="top", fontsize=8)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right", fontsize=8)
    ax.set_title("Induction score and in-context-learning score over training")
    return fig


def scatter(x: Any, y: Any, *, title: str = "", xlabel: str = "", ylabel: str = "", diagonal: bool = False) -> Any:
    """A plain scatter plot (small translucent points), with an optional y = x line."""
    xv, yv = _np(x).ravel(), _np(y).ravel()
    fig = new_figure(4.5, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(xv, yv, s=3, alpha=0.3)
    if diagonal and xv.size:
        lo, hi = float(min(xv.min(), yv.min())), float(max(xv.max(), yv.max()))
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig
