"""Pictures of toy-model superposition (matplotlib object API via ``mechscope.viz.report``; no pyplot).

Each function takes plain tensors / lists and returns a matplotlib ``Figure`` so callers decide whether to
embed it in a report (``figure_html``) or write it for the docs (``save_figure``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mechscope.toy.geometry import PHASE_NAMES, STICKY_FRACTIONS
from mechscope.viz.report import new_figure


def norms_and_superposition(sparsities: list[float], norms: Tensor, sup: Tensor) -> Any:
    """One column per sparsity: bars of ‖W_i‖ coloured by superposition Σ_{j≠i}(Ŵ_i·W_j)² (n=20, m=5)."""
    import matplotlib

    k = len(sparsities)
    fig = new_figure(2.0 * k, 3.6)
    axes = fig.subplots(1, k, sharex=True, squeeze=False)[0]
    cmap = matplotlib.colormaps["viridis"]
    for ax, s, nv, sv in zip(axes, sparsities, norms, sup, strict=True):
        colours = [cmap(min(float(v), 1.0)) for v in sv]
        ax.barh(range(nv.shape[0]), nv.tolist(), color=colours)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.3)
        ax.set_title(f"1−S = {1 - s:.3g}", fontsize=9)
        ax.set_xlabel("‖W_i‖", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("feature i (importance 0.9^i)", fontsize=8)
    fig.suptitle("n=20, m=5: colour = superposition (yellow ≥ 1, dark = orthogonal)", fontsize=9)
    return fig


def phase_diagram(rel_importance: Tensor, density: Tensor, phase: Tensor) -> Any:
    """The n=2, m=1 phase diagram: ``phase [density, importance]`` over log axes."""
    from matplotlib.colors import ListedColormap

    fig = new_figure(5.0, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    colours = ["#4c72b0", "#dd8452", "#55a868"]
    cmap = ListedColormap(colours)
    ax.pcolormesh(rel_importance.numpy(), density.numpy(), phase.numpy(), cmap=cmap, vmin=-0.5, vmax=2.5,
                  shading="nearest")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("relative importance of feature 2")
    ax.set_ylabel("feature density 1 − S")
    handles = [ax.scatter([], [], color=c, marker="s", label=n) for c, n in zip(colours, PHASE_NAMES,
                                                                                strict=True)]
    ax.legend(handles=handles, fontsize=8, loc="lower left", title="feature 2 is", title_fontsize=8)
    ax.set_title("n=2, m=1 phase diagram")
    return fig


def dimensionality(inv_density: Tensor, dims_per_feature: Tensor, feature_dims: Tensor, norms: Tensor) -> Any:
    """Dimensions per feature against 1/(1−S) with the sticky fractions, plus each feature's D_i."""
    fig = new_figure(7.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    x = inv_density.numpy()
    for f in STICKY_FRACTIONS:
        ax.axhline(float(f), color="#bbb", lw=0.7, ls="--")
        ax.text(x.max() * 1.05, float(f), str(f), fontsize=7, va="center")
    on = norms > 0.5
    xs = inv_density[:, None].expand_as(feature_dims)[on]
    ax.scatter(xs.numpy(), feature_dims[on].numpy(), s=4, alpha=0.3, color="#dd8452", label="feature D_i")
    ax.plot(x, dims_per_feature.numpy(), "k.-", lw=1, label="m / ‖W‖_F²")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("1 / (1 − S)")
    ax.set_ylabel("dimensions per feature")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def feature_vectors_2d(Ws: list[Tensor], titles: list[str]) -> Any:
    """Feature directions W_i (rows of ``[n, 2]`` tensors, or ``[n, 1]`` drawn on a line) as arrows."""
    k = len(Ws)
    fig = new_figure(2.6 * k, 2.8)
    axes = fig.subplots(1, k, squeeze=False)[0]
    for ax, W, t in zip(axes, Ws, titles, strict=True):
        w2 = W if W.shape[1] == 2 else torch.cat([W, torch.zeros_like(W)], 1)
        for i, (a, b) in enumerate(w2.tolist()):
            ax.annotate("", xy=(a, b), xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": f"C{i % 10}"})
        lim = max(1.2, float(w2.abs().max()) * 1.15)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(t, fontsize=8)
        ax.tick_params(labelsize=6)
    return fig


def and_accuracy(widths: list[int], n_ands: int, curves: dict[str, list[float]]) -> Any:
    """ANDs computed (right on every input) against hidden width, one line per objective."""
    fig = new_figure(5.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for name, ys in curves.items():
        ax.plot(widths, ys, "o-", label=name)
    ax.plot(widths, [min(w, n_ands) for w in widths], "k:", lw=1, label="one AND per neuron")
    ax.axhline(n_ands, color="#999", lw=0.8)
    ax.set_xlabel("hidden neurons")
    ax.set_ylabel(f"ANDs computed (of {n_ands})")
    ax.legend(fontsize=8)
    return fig


def and_weights(W_in: Tensor, b_in: Tensor, W_out: Tensor, title: str) -> Any:
    """Heatmaps of a trained AND network: W_in with the bias as the last row, and W_out."""
    fig = new_figure(9.0, 3.4)
    a1, a2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 3]})
    left = torch.cat([W_in, b_in[None]], 0)
    v = float(left.abs().max())
    a1.imshow(left.numpy(), cmap="RdBu", vmin=-v, vmax=v, aspect="auto")
    a1.set_xlabel("neuron")
    a1.set_ylabel("input variable (last row: bias)")
    v = float(W_out.abs().max())
    a2.imshow(W_out.numpy(), cmap="RdBu", vmin=-v, vmax=v, aspect="auto")
    a2.set_xlabel("AND output (pair)")
    a2.set_ylabel("neuron")
    fig.suptitle(title, fontsize=9)
    return fig
