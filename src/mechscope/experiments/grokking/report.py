"""Pictures of a grokking run: loss curves with phases, embedding Fourier norms, progress measures,
neuron activation heatmaps; the report section that shows them, and the tour's section (which reuses a
recorded run or makes a quick one).

Phases (marked on the loss curve) follow Nanda et al.: *memorisation* until train accuracy first hits
100%, *circuit formation* until test accuracy first reaches 99%, *clean-up* afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mechscope.errors import ConfigError, ModelFileError
from mechscope.experiments.grokking.analysis import analyze, cached_analysis
from mechscope.experiments.grokking.config import QUICK
from mechscope.experiments.grokking.run import load_run, run
from mechscope.train import list_checkpoints, read_metrics


def _phase_marks(ax: Any, summary: dict[str, Any]) -> None:
    e1, e2 = summary.get("epoch_train_100"), summary.get("epoch_test_99")
    if e1 is not None:
        ax.axvline(e1, color="tab:green", ls="--", lw=1, label=f"train acc 100% (epoch {e1})")
    if e2 is not None:
        ax.axvline(e2, color="tab:red", ls="--", lw=1, label=f"test acc 99% (epoch {e2})")
    if e1 is not None and e2 is not None:
        ax.axvspan(0, e1, color="tab:green", alpha=0.06)
        ax.axvspan(e1, e2, color="tab:orange", alpha=0.06)


def plot_losses(run_dir: Path, summary: dict[str, Any]) -> Any:
    """Train and test loss (log scale) over epochs with the grokking phases shaded."""
    from mechscope.viz.report import new_figure

    recs = read_metrics(run_dir)
    fig = new_figure(6.4, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    tr = [(r["step"], r["loss"]) for r in recs if r.get("loss")]
    te = [(r["step"], r["test_loss"]) for r in recs if r.get("test_loss")]
    if tr:
        ax.plot(*zip(*tr), label="train loss", color="tab:blue")
    if te:
        ax.plot(*zip(*te), label="test loss", color="tab:orange")
    _phase_marks(ax, summary)
    ax.set_yscale("log")
    ax.set_xlabel("epoch (full-batch update)")
    ax.set_ylabel("cross-entropy")
    ax.set_title(f"Grokking a + b mod {summary['p']}: memorise, form circuit, clean up")
    ax.legend(fontsize=7)
    return fig


def plot_embed_norms(summary: dict[str, Any]) -> Any:
    """Squared norm of the embedding per Fourier frequency, key frequencies highlighted."""
    from mechscope.viz.report import new_figure

    energy = summary["embed_freq_energy"]
    keys = set(summary["key_frequencies"])
    fig = new_figure(6.4, 3.0)
    ax = fig.add_subplot(1, 1, 1)
    ks = list(range(1, len(energy) + 1))
    ax.bar(ks, energy, color=["tab:red" if k in keys else "tab:gray" for k in ks])
    ax.set_xlabel("frequency k  (w_k = 2πk/p)")
    ax.set_ylabel("‖W_E in cos/sin k‖²")
    ax.set_title(f"Embedding Fourier norms: key frequencies {sorted(keys)} carry "
                 f"{summary['embed_key_freq_fraction']:.0%}", fontsize=9)
    return fig


def plot_progress(summary: dict[str, Any]) -> Any:
    """Progress measures over checkpoints: losses (log) and the logits' cosine with the trig prediction."""
    from mechscope.viz.report import new_figure

    h = summary["history"]
    steps = [r["step"] for r in h]
    fig = new_figure(6.4, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for key, color in (("train_loss", "tab:blue"), ("test_loss", "tab:orange"),
                       ("restricted_loss", "tab:purple"), ("excluded_loss", "tab:brown")):
        ax.plot(steps, [max(r[key], 1e-12) for r in h], label=key.replace("_", " "), color=color)
    _phase_marks(ax, summary)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(steps, [r["logit_trig_cosine"] for r in h], color="black", ls=":", label="logit cos with trig fit")
    ax2.set_ylim(0, 1.02)
    ax2.set_ylabel("cosine")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=6, loc="lower left", framealpha=0.6)
    ax.set_title("Progress measures (key frequencies of the final model)")
    return fig


def plot_neurons(model: Any, data: Any, summary: dict[str, Any], n: int = 5, window: int = 48) -> Any:
    """Heatmaps over (a, b): for each of the first ``n`` key frequencies, the neuron it explains best.

    Only ``a, b < window`` is drawn so that high frequencies stay visible (no aliasing) in a small PNG.
    """
    from mechscope.analysis.fourier import neuron_freq_fractions
    from mechscope.viz.report import new_figure

    p = data.p
    _, cache = model.run_with_cache(data.tokens, names=["blocks.0.mlp.hook_post"])
    acts = cache["blocks.0.mlp.hook_post"][:, -1].reshape(p, p, -1)
    fr = neuron_freq_fractions(acts)
    keys = summary["key_frequencies"][:n]
    best = fr[:, keys].max(0)  # per key frequency: (R², neuron)
    fig = new_figure(2.3 * len(keys), 2.6)
    for i, (k, r2, neuron) in enumerate(zip(keys, best.values.tolist(), best.indices.tolist(), strict=True)):
        ax = fig.add_subplot(1, len(keys), i + 1)
        w = min(window, p)
        ax.imshow(acts[:w, :w, neuron].detach().numpy(), cmap="viridis", origin="lower", interpolation="nearest")
        ax.set_title(f"neuron {neuron}: k={k}\nR²={r2:.2f}", fontsize=8)
        ax.set_xlabel(f"b (< {min(window, p)})")
        ax.set_ylabel("a")
    return fig


def make_figures(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """All four figures, keyed by file stem."""
    _, model, data = load_run(run_dir)
    return {"losses": plot_losses(run_dir, summary), "embed_fourier_norms": plot_embed_norms(summary),
            "progress_measures": plot_progress(summary), "neuron_heatmaps": plot_neurons(model, data, summary)}


def save_figures(run_dir: Path, summary: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write the figures as PNGs into ``out_dir``."""
    from mechscope.viz.report import save_figure

    return [save_figure(fig, Path(out_dir) / f"{name}.png") for name, fig in make_figures(run_dir, summary).items()]


SUMMARY_KEYS = ("p", "train_acc", "test_acc", "epochs", "epoch_train_100", "epoch_test_99",
                "epoch_restricted_loss_below_1", "epoch_test_loss_below_1", "key_frequencies",
                "embed_key_freq_fraction", "neuron_key_freq_r2", "restricted_loss", "excluded_loss", "test_loss",
                "ablated_nonkey_test_loss", "logit_trig_cosine", "wall_seconds")


def report_section(run_dir: Path, summary: dict[str, Any], note: str) -> Any:
    """A ``Section`` with the summary table and the four figures."""
    from mechscope.viz.report import Section, esc, figure_html, table_html

    rows = [{"measure": k, "value": v if isinstance(v, float) else str(v)} for k in SUMMARY_KEYS
            if (v := summary.get(k)) is not None or k.startswith("epoch")]
    figs = make_figures(Path(run_dir), summary)
    body = (f"<p>{esc(note)}. A 1-layer transformer memorises a + b mod p, then groks it by a Fourier "
            "circuit: the embedding uses a few key frequencies, neurons compute cos/sin(w_k(a+b)), "
            "and logits follow cos(w_k(a+b−c)).</p>" + table_html(rows, floatfmt="{:.4g}")
            + "".join(figure_html(f, alt=name) for name, f in figs.items()))
    return Section(title="Grokking modular addition", body=body, anchor="grokking")


def tour_section(out_dir: Path, model: Any = None) -> Any:
    """A report section: reuse ``runs/grokking`` if it is a finished run, else a quick small-p run (≈30 s)."""
    out_dir = Path(out_dir)
    run_dir = Path("runs/grokking")
    note = "recorded p=113 run from runs/grokking"
    try:
        summary = cached_analysis(run_dir)
    except (ModelFileError, ConfigError, FileNotFoundError, IndexError):
        run_dir = out_dir / "grokking-quick"
        cfg = QUICK
        if run_dir.exists() and list_checkpoints(run_dir):
            import shutil

            shutil.rmtree(run_dir)
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny matmuls: extra threads only add contention on a busy CPU
        try:
            run(cfg, run_dir, progress=False)
            summary = analyze(run_dir)
        finally:
            torch.set_num_threads(threads)
        note = f"quick run (p={cfg.p}, {cfg.train_frac:.0%} train, lr {cfg.lr}, wd {cfg.weight_decay})"
    return report_section(run_dir, summary, note)
