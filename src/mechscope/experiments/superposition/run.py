"""Case study: toy models of superposition (Elhage et al. 2022) and computation in superposition.

``run(cfg)`` trains every reproduction as batched instance sweeps and returns a :class:`SuperpositionResult`
whose ``summary()`` is the JSON the CLI prints (``report.save_figures`` writes its pictures):

1. n=20, m=5, importance 0.9^i: features represented and their superposition, per sparsity.
2. the n=2, m=1 phase diagram over relative importance × feature density (one batched run).
3. geometry: dimensions per feature m/‖W‖_F² against 1/(1−S), sticky plateaus, feature dimensionalities.
4. polytopes: antipodal pair (n=2, m=1) and the pentagon (n=5, m=2) at high sparsity.
5. computation in superposition: pairwise ANDs with a one-hidden-layer ReLU MLP, swept over widths.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mechscope.experiments.superposition.config import SuperpositionExperimentConfig
from mechscope.toy import geometry as geo
from mechscope.toy.and_task import AndSweepResult, AndTaskConfig, best_per_width, train_and_sweep
from mechscope.toy.dictionary_check import run_dictionary_check
from mechscope.toy.superposition import ToyModel, ToyModelConfig, ToyTrainConfig, train_toy_model


@dataclass
class SuperpositionResult:
    """Everything measured by :func:`run` (tensors on CPU) plus where the pictures went."""

    intro: dict[str, Any]
    phase: dict[str, Any]
    geometry: dict[str, Any]
    polytopes: dict[str, Any]
    and_task: dict[str, Any]
    dictionary: dict[str, Any] | None
    seconds: dict[str, float]
    figures: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready digest of the headline figures."""
        return {
            "features_represented_per_sparsity": dict(zip(
                [f"{s:g}" for s in self.intro["sparsities"]], self.intro["n_represented"], strict=True)),
            "phase_diagram": {"relative_importance": self.phase["rel_importance"],
                              "density": self.phase["density"], "legend": list(geo.PHASE_NAMES),
                              "grid_density_by_importance": self.phase["grid"]},
            "dimensions_per_feature": {"inv_density": self.geometry["inv_density"],
                                       "values": self.geometry["dims_per_feature"],
                                       "plateaus": self.geometry["plateaus"],
                                       "feature_group_sizes": self.geometry["group_census"]},
            "polytopes": self.polytopes["summary"],
            "and_task": self.and_task["summary"],
            "dictionary_check": self.dictionary,
            "seconds": self.seconds,
            "figures": {k: str(v) for k, v in self.figures.items()},
        }


def _train(n: int, m: int, importance: Any, prob: Any, tcfg: ToyTrainConfig, seed: int
           ) -> tuple[ToyModel, torch.Tensor]:
    """Build and train one batched sweep; returns the model and W (detached)."""
    prob = torch.as_tensor(prob, dtype=torch.float32)
    prob = prob[:, None] if prob.ndim == 1 else prob  # one density per instance
    model = ToyModel(ToyModelConfig(n_features=n, d_hidden=m, n_instances=prob.shape[0], seed=seed),
                     importance=importance, feature_probability=prob)
    train_toy_model(model, tcfg)
    return model, model.W.detach().clone()


def run_intro(cfg: SuperpositionExperimentConfig) -> dict[str, Any]:
    """n=20, m=5, importance 0.9^i at each sparsity: ‖W_i‖, superposition, features represented."""
    sp = torch.tensor(cfg.intro_sparsities)
    _, W = _train(20, 5, 0.9 ** torch.arange(20.0), 1 - sp, cfg.intro_train, cfg.seed)
    return {"sparsities": list(cfg.intro_sparsities), "W": W, "norms": geo.feature_norms(W),
            "superposition": geo.superposition(W), "n_represented": geo.n_represented(W).tolist()}


def run_phase(cfg: SuperpositionExperimentConfig) -> dict[str, Any]:
    """The n=2, m=1 phase diagram as one batched run of ``phase_grid²`` instances."""
    r = cfg.phase_grid
    rel, dens = torch.logspace(-1, 1, r), torch.logspace(-2, 0, r)
    imp = torch.stack([torch.ones(r * r), rel.repeat(r)], -1)
    prob = dens.repeat_interleave(r)
    _, W = _train(2, 1, imp, prob, cfg.phase_train, cfg.seed)
    grid = geo.phase_n2m1(W).view(r, r)
    return {"rel_importance": [round(v, 4) for v in rel.tolist()], "density": [round(v, 4) for v in dens.tolist()],
            "grid": grid.tolist(), "phase": grid, "W": W}


def run_geometry(cfg: SuperpositionExperimentConfig) -> dict[str, Any]:
    """Uniform-importance sweep over sparsity: dimensions per feature, D_i, plateaus, feature groups."""
    inv = torch.logspace(0, float(torch.log10(torch.tensor(cfg.geom_max_inv_density))), cfg.geom_points)
    _, W = _train(cfg.geom_n_features, cfg.geom_d_hidden, 1.0, 1 / inv, cfg.geom_train, cfg.seed)
    dpf, dims, norms = geo.dimensions_per_feature(W), geo.feature_dimensionality(W), geo.feature_norms(W)
    census = []
    for k in range(W.shape[0]):  # per-instance graph search on ≤ n_features nodes; reporting only
        sizes = [len(g) for g in geo.feature_groups(W[k])]
        census.append({str(s): sizes.count(s) for s in sorted(set(sizes))})
    plateaus = [{"fraction": str(p.fraction), "first_inv_density": round(float(inv[p.start]), 3),
                 "points": p.length, "mean": round(p.mean_value, 4)} for p in geo.find_plateaus(dpf)]
    return {"inv_density": [round(v, 3) for v in inv.tolist()], "dims_per_feature": [round(v, 4) for v in dpf.tolist()],
            "plateaus": plateaus, "group_census": census, "W": W, "D": dims, "norms": norms, "dpf": dpf}


def run_polytopes(cfg: SuperpositionExperimentConfig) -> dict[str, Any]:
    """Antipodal pair (n=2, m=1, S=0.99) and n=5, m=2 at S = 0, 0.8, 0.9, 0.99 (pentagon when sparse)."""
    tcfg = cfg.polytope_train
    _, W2 = _train(2, 1, 1.0, torch.tensor([1.0, 0.01]), tcfg, cfg.seed)
    sp5 = [0.0, 0.8, 0.9, 0.99]
    _, W5 = _train(5, 2, 1.0, 1 - torch.tensor(sp5), tcfg, cfg.seed)
    d5 = geo.feature_dimensionality(W5)
    on5 = geo.feature_norms(W5) > 0.5
    mean_d5 = (d5 * on5).sum(-1) / on5.sum(-1).clamp_min(1)  # over represented features only
    summary = {"n2_m1_S0.99_weights": [round(v, 3) for v in W2[1, :, 0].tolist()],
               "n2_m1_S0.99_antipodal": bool(geo.phase_n2m1(W2)[1] == geo.PHASE_SUPERPOSITION),
               "n5_m2_represented": dict(zip([f"{s:g}" for s in sp5], geo.n_represented(W5).tolist(), strict=True)),
               "n5_m2_mean_D_represented": dict(zip([f"{s:g}" for s in sp5], [round(v, 3) for v in mean_d5.tolist()],
                                        strict=True))}
    return {"W2": W2, "W5": W5, "sp5": sp5, "summary": summary}


def _and_block(res: AndSweepResult, cfg: AndTaskConfig) -> dict[str, Any]:
    """Best restart per width: ANDs computed, exact-match rate, and how neurons behave."""
    best = best_per_width(res)
    rows = []
    for w, k in sorted(best.items()):
        rows.append({"width": w, "ands_computed": int(res.ands_computed[k]),
                     "exact_match": round(float(res.exact_match[k]), 4),
                     "output_accuracy": round(float(res.output_accuracy[k]), 4),
                     "loss": round(float(res.loss[k]), 5)})
    return {"rows": rows, "best": best, "objective": cfg.objective}


def run_and(cfg: SuperpositionExperimentConfig) -> dict[str, Any]:
    """The AND sweep twice: MSE (outputs must equal the AND) and BCE (thresholded logits)."""
    mse_cfg = replace(cfg.and_task, objective="mse", seed=cfg.seed)
    bce_cfg = replace(cfg.and_task, objective="bce", seed=cfg.seed)
    mse, bce = train_and_sweep(mse_cfg), train_and_sweep(bce_cfg)
    blocks = {"mse": _and_block(mse, mse_cfg), "bce": _and_block(bce, bce_cfg)}
    summary = {"n_vars": cfg.and_task.n_vars, "n_ands": cfg.and_task.n_ands, "tolerance_mse": mse_cfg.tolerance,
               **{obj: {str(r["width"]): {"ands_computed": r["ands_computed"], "exact_match": r["exact_match"]}
                        for r in b["rows"]} for obj, b in blocks.items()}}
    for obj, b in blocks.items():
        more = [r["width"] for r in b["rows"] if r["ands_computed"] > r["width"]]
        summary[f"{obj}_widths_with_more_ands_than_neurons"] = more
    return {"results": {"mse": mse, "bce": bce}, "blocks": blocks, "summary": summary}


def run(cfg: SuperpositionExperimentConfig) -> SuperpositionResult:
    """Run every sweep (no pictures: ``report.save_figures(res, cfg, out_dir)`` writes them)."""
    seconds: dict[str, float] = {}
    parts: dict[str, dict[str, Any]] = {}
    for name, fn in (("intro", run_intro), ("phase", run_phase), ("geometry", run_geometry),
                     ("polytopes", run_polytopes), ("and_task", run_and)):
        t0 = time.perf_counter()
        parts[name] = fn(cfg)
        seconds[name] = round(time.perf_counter() - t0, 2)
    dictionary = None
    if cfg.dictionary is not None:
        t0 = time.perf_counter()
        dictionary = run_dictionary_check(replace(cfg.dictionary, seed=cfg.seed))
        seconds["dictionary"] = round(time.perf_counter() - t0, 2)
    return SuperpositionResult(**parts, dictionary=dictionary, seconds=seconds)
