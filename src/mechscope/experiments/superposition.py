"""Case study: toy models of superposition (Elhage et al. 2022) and computation in superposition.

``run(cfg, out_dir)`` trains every reproduction as batched instance sweeps, writes the pictures to
``out_dir`` and returns a :class:`SuperpositionResult` whose ``summary()`` is the JSON the CLI prints:

1. n=20, m=5, importance 0.9^i: features represented and their superposition, per sparsity.
2. the n=2, m=1 phase diagram over relative importance × feature density (one batched run).
3. geometry: dimensions per feature m/‖W‖_F² against 1/(1−S), sticky plateaus, feature dimensionalities.
4. polytopes: antipodal pair (n=2, m=1) and the pentagon (n=5, m=2) at high sparsity.
5. computation in superposition: pairwise ANDs with a one-hidden-layer ReLU MLP, swept over widths.

``tour_section(out_dir)`` runs the quick configuration for the report tour.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mechscope.errors import ConfigError
from mechscope.toy import geometry as geo
from mechscope.toy.and_task import AndSweepResult, AndTaskConfig, best_per_width, train_and_sweep
from mechscope.toy.dictionary_check import DictionaryCheckConfig, run_dictionary_check
from mechscope.toy.superposition import ToyModel, ToyModelConfig, ToyTrainConfig, train_toy_model
from mechscope.viz.report import Section


@dataclass(frozen=True, kw_only=True)
class SuperpositionExperimentConfig:
    """Sizes of every sweep; ``quick()`` gives the tour-sized version."""

    intro_sparsities: tuple[float, ...] = (0.0, 0.7, 0.9, 0.97, 0.99, 0.999)
    """Sparsities S of the n=20, m=5 reproduction."""
    intro_train: ToyTrainConfig = field(default_factory=lambda: ToyTrainConfig(steps=5000, lr=1e-3,
                                                                               progress=False))
    """Training of the n=20, m=5 models."""
    phase_grid: int = 20
    """The phase diagram is ``phase_grid × phase_grid`` (importance 0.1..10, density 0.01..1, log)."""
    phase_train: ToyTrainConfig = field(default_factory=lambda: ToyTrainConfig(steps=2000, lr=1e-2,
                                                                               batch_size=512, progress=False))
    """Training of the phase-diagram instances."""
    geom_n_features: int = 100
    """Features of the geometry sweep (uniform importance)."""
    geom_d_hidden: int = 20
    """Hidden dimensions of the geometry sweep."""
    geom_points: int = 24
    """Sparsities in the geometry sweep, 1/(1−S) log-spaced from 1 to ``geom_max_inv_density``."""
    geom_max_inv_density: float = 300.0
    """Largest 1/(1−S) in the geometry sweep."""
    geom_train: ToyTrainConfig = field(default_factory=lambda: ToyTrainConfig(steps=3000, lr=3e-3,
                                                                              batch_size=512, progress=False))
    """Training of the geometry sweep."""
    polytope_train: ToyTrainConfig = field(default_factory=lambda: ToyTrainConfig(steps=3000, lr=1e-2,
                                                                                  batch_size=512, progress=False))
    """Training of the antipodal-pair and pentagon models."""
    and_task: AndTaskConfig = field(default_factory=lambda: AndTaskConfig(progress=False))
    """The AND task (the ``bce`` contrast reuses it with ``objective="bce"``)."""
    dictionary: DictionaryCheckConfig | None = field(default_factory=DictionaryCheckConfig)
    """SAE-recovers-the-true-features check (needs ``mechscope.dictionaries``); None skips it."""
    seed: int = 0
    """Base seed of every sweep."""

    def __post_init__(self) -> None:
        if any(not 0 <= s < 1 for s in self.intro_sparsities):
            raise ConfigError(f"intro_sparsities must lie in [0, 1), got {self.intro_sparsities}")
        if self.phase_grid < 2 or self.geom_points < 2:
            raise ConfigError(f"phase_grid and geom_points must be >= 2, got {self.phase_grid}, {self.geom_points}")
        if self.geom_d_hidden >= self.geom_n_features:
            raise ConfigError(f"geom_d_hidden ({self.geom_d_hidden}) must be < geom_n_features "
                              f"({self.geom_n_features}) for superposition to be possible")
        if self.geom_max_inv_density <= 1:
            raise ConfigError(f"geom_max_inv_density must be > 1, got {self.geom_max_inv_density}")

    @classmethod
    def quick(cls, seed: int = 0) -> SuperpositionExperimentConfig:
        """Tour-sized sweeps (seconds, not minutes); coarser but the same shapes of result."""
        fast = ToyTrainConfig(steps=600, lr=1e-2, batch_size=256, progress=False)
        return cls(intro_sparsities=(0.0, 0.9, 0.99), intro_train=fast, phase_grid=8, phase_train=fast,
                   geom_n_features=30, geom_d_hidden=6, geom_points=8, geom_max_inv_density=100.0,
                   geom_train=fast, polytope_train=fast, and_task=AndTaskConfig(n_vars=6, widths=(2, 4, 8, 15), seeds_per_width=1,
                                                           steps=800, progress=False),
                   dictionary=None, seed=seed)


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


def run(cfg: SuperpositionExperimentConfig, out_dir: Path | None = None) -> SuperpositionResult:
    """Run every sweep; when ``out_dir`` is given, write the pictures there as PNG."""
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
    res = SuperpositionResult(**parts, dictionary=dictionary, seconds=seconds)
    if out_dir is not None:
        from mechscope.toy.report import save_figures
        res.figures = save_figures(res, cfg, Path(out_dir))
    return res


def tour_section(out_dir: Path) -> Section:
    """The tour's superposition section: the quick configuration, pictures embedded as HTML."""
    from mechscope.toy.report import section_html

    cfg = SuperpositionExperimentConfig.quick()
    res = run(cfg)  # pictures are rendered once, below, for both the HTML and out_dir
    return Section(title="Toy models of superposition", body=section_html(res, cfg, Path(out_dir)),
                   anchor="superposition",
                   notes=[f"Quick configuration; sweep times (s): {res.seconds}. Full run: "
                          "`mechscope superposition run --out DIR`; recorded figures in docs/superposition.md."])
