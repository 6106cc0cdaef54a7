"""Static plots render (NaNs allowed) and save as PNG."""

from __future__ import annotations

import torch

from mechscope.viz.plots import heatmap, phase_change_plot, scatter
from mechscope.viz.report import figure_png


def test_plots_render_png() -> None:
    values = torch.rand(3, 4)
    values[0, 0] = float("nan")
    for fig in (heatmap(values, title="t", xlabel="x", ylabel="y"),
                phase_change_plot([0, 10, 20], [0.0, -0.2, -0.5], [0.0, 0.4, 0.8], marker=10),
                scatter(torch.randn(50), torch.randn(50), diagonal=True)):
        assert figure_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"
    ax = heatmap(values, annotate=True).axes[0]
    assert len(ax.texts) == 11  # one label per finite cell
