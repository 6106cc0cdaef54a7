"""``SweepResult``: a patching sweep's numbers as a tensor with named axes, labels and baselines.

``values[i, j, ...]`` is the metric (averaged over prompts) after intervening at the site named by
``labels[axes[0]][i]``, ``labels[axes[1]][j]``, ...; ``clean`` and ``corrupted`` are the two baselines, so
``normalised()`` maps every entry to 0 = corrupted, 1 = clean. ``heatmap()`` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mechscope.metrics import normalise


@dataclass(frozen=True, kw_only=True, eq=False)
class SweepResult:
    """See the module docstring."""

    values: Tensor
    """Metric per site, shape ``[len(labels[a]) for a in axes]``."""
    axes: tuple[str, ...]
    """Axis names, e.g. ``("layer", "pos")`` or ``("layer", "head")``."""
    labels: dict[str, list[str]]
    """Tick labels per axis."""
    sweep: str
    """Which activation was patched (``resid_pre``, ``z``, ``z_by_pos``, ``pattern``...)."""
    direction: str
    """``denoise`` (clean into corrupted run) or ``noise`` (corrupted into clean run)."""
    metric: str
    """Metric name."""
    clean: float
    """Metric of the clean run."""
    corrupted: float
    """Metric of the corrupted run."""
    method: str = "exact"
    """``exact`` (activation patching), ``attribution`` (gradient estimate) or ``path``."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form metadata (timings, chunk sizes)."""

    def __post_init__(self) -> None:
        want = tuple(len(self.labels[a]) for a in self.axes)
        if tuple(self.values.shape) != want:
            raise ValueError(f"values shape {tuple(self.values.shape)} does not match labels {want}")

    def normalised(self) -> Tensor:
        """Values mapped to 0 = corrupted baseline, 1 = clean baseline."""
        return normalise(self.values, self.clean, self.corrupted)

    def top(self, k: int = 10, *, by: str = "abs_change") -> list[tuple[tuple[str, ...], float]]:
        """The ``k`` sites with the largest effect: ``[((label, ...), normalised value), ...]``.

        ``by="abs_change"`` ranks by distance from the run's own baseline (corrupted for denoising, clean for
        noising); ``by="value"`` by the normalised value itself.
        """
        norm = self.normalised()
        base = 0.0 if self.direction == "denoise" else 1.0
        score = (norm - base).abs() if by == "abs_change" else norm
        flat = score.flatten()
        order = torch.argsort(flat, descending=True)[:k]
        out = []
        for i in order.tolist():
            idx = torch.unravel_index(torch.tensor(i), norm.shape)
            names = tuple(self.labels[a][int(j)] for a, j in zip(self.axes, idx))
            out.append((names, float(norm.flatten()[i])))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"sweep": self.sweep, "direction": self.direction, "metric": self.metric, "method": self.method,
                "axes": list(self.axes), "labels": self.labels, "clean": self.clean, "corrupted": self.corrupted,
                "values": self.values.tolist(), "extra": self.extra}

    def heatmap(self, title: str | None = None, *, normalised: bool = True, width: float = 7.0) -> Any:
        """A matplotlib figure: one heatmap (2-D), or one panel per middle label (3-D, at most 8)."""
        from mechscope.viz.report import new_figure

        data = (self.normalised() if normalised else self.values).detach().float()
        if data.dim() == 1:
            data = data[:, None]
        panels = [(None, data)] if data.dim() == 2 else \
            [(lab, data[:, i]) for i, lab in enumerate(self.labels[self.axes[1]][:8])]
        ylab = self.axes[0]
        xlab = self.axes[-1] if len(self.axes) > 1 else ""
        fig = new_figure(width, 0.6 + 0.3 * data.shape[0] if len(panels) == 1 else 2.5 + 0.25 * data.shape[0])
        lim = float(data.abs().max()) or 1.0
        for k, (lab, d) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), k + 1)
            im = ax.imshow(d.numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
            ax.set_ylabel(ylab if k == 0 else "")
            ax.set_xlabel(xlab)
            xt = self.labels[self.axes[-1]] if len(self.axes) > 1 else [""]
            ax.set_xticks(range(len(xt)), xt, rotation=90 if max(map(len, xt)) > 2 else 0, fontsize=7)
            ax.set_yticks(range(d.shape[0]), self.labels[ylab], fontsize=7)
            if lab is not None:
                ax.set_title(f"{self.axes[1]} {lab}", fontsize=8)
        # a colorbar on the last panel only: gridspec-based, so the report's tight_layout keeps it apart
        fig.colorbar(im, ax=ax, shrink=0.8, label="normalised metric" if normalised else self.metric)
        fig.suptitle(title or f"{self.method} patching: {self.sweep} ({self.direction})", fontsize=10)
        return fig

    def _repr_html_(self) -> str:
        """Inline rendering in Jupyter: baselines, the top sites and the heatmap."""
        from mechscope.viz.report import esc, figure_html, table_html

        head = (f"<p><b>SweepResult</b>: {esc(self.method)} patching of <code>{esc(self.sweep)}</code> "
                f"({esc(self.direction)}), axes {esc(' × '.join(self.axes))} = {esc(tuple(self.values.shape))}; "
                f"metric <code>{esc(self.metric)}</code>: clean {self.clean:+.3f}, corrupted {self.corrupted:+.3f}</p>")
        rows = [{"site": ", ".join(f"{a} {n}" for a, n in zip(self.axes, names)), "normalised": v}
                for names, v in self.top(5)]
        return head + table_html(rows) + figure_html(self.heatmap(), alt=f"{self.sweep} heatmap")


def correlation(a: SweepResult, b: SweepResult) -> float:
    """Pearson correlation of two sweeps over the same sites (e.g. attribution vs exact patching)."""
    if a.values.shape != b.values.shape:
        raise ValueError(f"sweeps cover different sites: {tuple(a.values.shape)} vs {tuple(b.values.shape)}")
    x, y = a.values.flatten().double(), b.values.flatten().double()
    x, y = x - x.mean(), y - y.mean()
    den = float(x.norm() * y.norm())
    return float((x @ y) / den) if den > 0 else float("nan")


__all__ = ["SweepResult", "correlation"]
