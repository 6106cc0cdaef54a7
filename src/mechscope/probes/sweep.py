"""Probing sweeps: one probe per hook (e.g. every layer's residual stream), with control-task selectivity.

The activations come from one ``collect`` pass over the data (every layer in the same forward); the probes
of all hooks of equal width are trained together (``fit_probes`` batches them). The result is a table, one
row per hook: train / validation / test score, and, when the dataset has word types, the control-task test
score and the selectivity (task minus control).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mechscope.errors import ConfigError
from mechscope.probes.dataset import ActivationDataset, Splits
from mechscope.probes.linear import LinearProbe, ProbeConfig, control_labels, fit_probes, score


@dataclass(frozen=True)
class SweepRow:
    """Scores of one hook's probe (accuracy for logistic probes, R² for linear ones)."""

    hook: str
    train: float
    val: float
    test: float
    control_test: float | None = None
    selectivity: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class SweepResult:
    rows: list[SweepRow]
    probes: dict[str, LinearProbe] = field(repr=False)

    def best(self) -> SweepRow:
        """The hook with the best validation score."""
        return max(self.rows, key=lambda r: r.val)


def probe_sweep(ds: ActivationDataset, splits: Splits, hooks: list[str] | None = None,
                cfg: ProbeConfig | None = None, *, control: bool = True, seed: int = 0) -> SweepResult:
    """Train and score a probe per hook; with ``control`` (and word types) also the Hewitt & Liang control task."""
    cfg = cfg or ProbeConfig()
    names = hooks if hooks is not None else ds.hooks
    if any(len(s) == 0 for s in splits):
        raise ConfigError(f"every split needs rows; got sizes {[len(s) for s in splits]} (use more source documents)")
    by_width: dict[int, list[str]] = {}
    for h in names:
        by_width.setdefault(ds.acts[h].shape[1] if h in ds.acts else -1, []).append(h)
    do_control = control and cfg.kind == "logistic" and ds.types is not None
    ctrl = control_labels(ds.types, ds.labels, seed) if do_control else None  # type: ignore[arg-type]
    probes: dict[str, LinearProbe] = {}
    ctrl_probes: dict[str, LinearProbe] = {}
    for group in by_width.values():
        x = ds.stacked(group)
        tr, va = x[:, splits.train], x[:, splits.val]
        for p in fit_probes(tr, ds.labels[splits.train], va, ds.labels[splits.val], group, cfg):
            probes[p.hook] = p
        if ctrl is not None:
            for p in fit_probes(tr, ctrl[splits.train], va, ctrl[splits.val], group, cfg):
                ctrl_probes[p.hook] = p
    rows = []
    for h in names:
        a, y = ds.acts[h], ds.labels
        s = [score(probes[h], a[idx], y[idx]) for idx in splits]
        c = score(ctrl_probes[h], a[splits.test], ctrl[splits.test]) if ctrl is not None else None
        rows.append(SweepRow(h, s[0], s[1], s[2], control_test=c, selectivity=None if c is None else s[2] - c))
    return SweepResult(rows, probes)


def layer_hooks(kind: str, n_layers: int) -> list[str]:
    """``blocks.L.<kind>`` for every layer (``kind`` like ``hook_resid_post`` or ``mlp.hook_post``)."""
    return [f"blocks.{layer}.{kind}" for layer in range(n_layers)]


def accuracy_figure(result: SweepResult, title: str = "probe accuracy by layer") -> Any:
    """A matplotlib ``Figure``: test score (and control / selectivity when present) against hook index."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    idx = list(range(len(result.rows)))
    ax.plot(idx, [r.test for r in result.rows], "o-", label="task (test)")
    if result.rows and result.rows[0].control_test is not None:
        ax.plot(idx, [float(r.control_test or 0) for r in result.rows], "s--", label="control task (test)")
        ax.plot(idx, [float(r.selectivity or 0) for r in result.rows], "^:", label="selectivity")
    ax.set_xlabel("layer")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["SweepResult", "SweepRow", "accuracy_figure", "layer_hooks", "probe_sweep"]
