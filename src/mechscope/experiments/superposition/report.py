"""Figures and HTML of the superposition case study, and its tour section.

The pictures themselves are drawn by ``mechscope.toy.plots`` (plain tensors in, figures out); this module
picks what to draw from a :class:`SuperpositionResult`, writes the PNGs (``save_figures``) and the report
section (``section_html``, ``tour_section``).
"""

from __future__ import annotations

import base64
from functools import partial
from pathlib import Path
from typing import Any

import torch

from mechscope.experiments.superposition.config import SuperpositionExperimentConfig
from mechscope.experiments.superposition.run import SuperpositionResult, run
from mechscope.toy import plots
from mechscope.viz.report import Section, esc, figure_png, save_figure, table_html


def build_figures(res: SuperpositionResult, cfg: SuperpositionExperimentConfig) -> dict[str, Any]:
    """Every picture of the case study, by file stem."""
    intro, ph, ge, po, an = res.intro, res.phase, res.geometry, res.polytopes, res.and_task
    figs: dict[str, Any] = {
        "intro_norms": plots.norms_and_superposition(intro["sparsities"], intro["norms"], intro["superposition"]),
        "phase_diagram": plots.phase_diagram(torch.tensor(ph["rel_importance"]), torch.tensor(ph["density"]),
                                             ph["phase"]),
        "dimensionality": plots.dimensionality(torch.tensor(ge["inv_density"]), ge["dpf"], ge["D"], ge["norms"]),
        "polytopes": plots.feature_vectors_2d(
            [po["W2"][1]] + [po["W5"][k] for k in range(len(po["sp5"]))],
            ["n=2, m=1, S=0.99"] + [f"n=5, m=2, S={s:g}" for s in po["sp5"]]),
    }
    widths = [r["width"] for r in an["blocks"]["mse"]["rows"]]
    curves = {f"{obj} objective": [r["ands_computed"] for r in b["rows"]] for obj, b in an["blocks"].items()}
    figs["and_accuracy"] = plots.and_accuracy(widths, cfg.and_task.n_ands, curves)
    for obj in ("mse", "bce"):
        b, model = an["blocks"][obj], an["results"][obj].model
        w = _most_interesting_width(b["rows"])
        k = b["best"][w]
        figs[f"and_weights_{obj}"] = plots.and_weights(
            model.W_in[k, :, :w].detach(), model.b_in[k, :w].detach(), model.W_out[k, :w].detach(),
            f"{obj}: width {w}, ANDs computed {int(an['results'][obj].ands_computed[k])}/{cfg.and_task.n_ands}")
    return figs


def _most_interesting_width(rows: list[dict[str, Any]]) -> int:
    """The narrowest width that computes every AND, else the widest."""
    full = [r["width"] for r in rows if r["exact_match"] == 1.0]
    return min(full) if full else max(r["width"] for r in rows)


def save_figures(res: SuperpositionResult, cfg: SuperpositionExperimentConfig, out_dir: Path) -> dict[str, Path]:
    """Write every picture as ``out_dir/<name>.png``; also records the paths in ``res.figures``."""
    res.figures = {name: save_figure(fig, Path(out_dir) / f"{name}.png")
                   for name, fig in build_figures(res, cfg).items()}
    return res.figures


def section_html(res: SuperpositionResult, cfg: SuperpositionExperimentConfig, out_dir: Path | None = None) -> str:
    """HTML body for the report: short explanations, tables and embedded pictures.

    Each picture is rendered once; with ``out_dir`` the same PNG bytes are also written there.
    """
    pngs = {name: figure_png(fig) for name, fig in build_figures(res, cfg).items()}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        from mechscope.io_safety import atomic_write

        for name, data in pngs.items():
            atomic_write(out_dir / f"{name}.png", partial(Path.write_bytes, data=data))

    def figure_html(name: str, alt: str) -> str:
        return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(pngs[name]).decode()}"/>'

    s = res.summary()
    rep = ", ".join(f"S={k}: {v}" for k, v in s["features_represented_per_sparsity"].items())
    plateaus = ", ".join(f"{p['fraction']} ({p['points']} pts)" for p in s["dimensions_per_feature"]["plateaus"])
    parts = [
        "<p>ReLU-output toy model x → h = xW → ReLU(hWᵀ + b), many instances trained in one batched "
        "program. Sparser inputs let the model store more features than dimensions.</p>",
        f"<p><b>Features represented (n=20, m=5):</b> {esc(rep)}</p>", figure_html("intro_norms", "norms"),
        "<p><b>n=2, m=1 phase diagram</b> (one batched run).</p>", figure_html("phase_diagram", "phase"),
        f"<p><b>Dimensions per feature</b>; plateaus found: {esc(plateaus or 'none')}.</p>",
        figure_html("dimensionality", "dimensionality"),
        "<p><b>Polytopes</b>: antipodal pair and the n=5, m=2 model as sparsity rises.</p>",
        figure_html("polytopes", "polytopes"),
        f"<p><b>Computation in superposition</b>: {cfg.and_task.n_vars} binary variables, at most two on, "
        f"{cfg.and_task.n_ands} pairwise ANDs from one ReLU layer (best restart per width).</p>",
    ]
    for obj, b in res.and_task["blocks"].items():
        parts.append(f"<p>objective <code>{esc(obj)}</code></p>" + table_html(b["rows"]))
    parts += [figure_html("and_accuracy", "and accuracy"), figure_html("and_weights_mse", "weights"),
              figure_html("and_weights_bce", "weights")]
    dc = res.dictionary
    if dc is not None:
        rows = [{"SAE": name, "mean max cosine": dc[name]["mean_max_cosine"], "FVU": dc[name]["fvu"]}
                for name in ("topk", "relu")]
        rows.append({"SAE": "random directions (chance)", "mean max cosine": dc["random_directions_mean_max_cosine"],
                     "FVU": float("nan")})
        parts.append(f"<p><b>Dictionary check</b>: SAEs trained on the hidden activations of an n={dc['n_features']}, "
                     f"m={dc['d_hidden']} toy model recover its {dc['represented']} represented feature "
                     "directions:</p>" + table_html(rows))
    return "".join(parts)


def tour_section(out_dir: Path) -> Section:
    """The tour's superposition section: the quick configuration, pictures embedded as HTML."""
    cfg = SuperpositionExperimentConfig.quick()
    res = run(cfg)  # pictures are rendered once, below, for both the HTML and out_dir
    return Section(title="Toy models of superposition", body=section_html(res, cfg, Path(out_dir)),
                   anchor="superposition",
                   notes=[f"Quick configuration; sweep times (s): {res.seconds}. Full run: "
                          "`mechscope superposition run --out DIR`; recorded figures in docs/superposition.md."])
