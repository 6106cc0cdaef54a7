"""Toy models of superposition: the sizes of every sweep of the case study (``quick()``: tour-sized).

The case study (``mechscope.experiments.superposition``) has three modules, each importing only those before
it: ``config`` (this), ``run`` (the batched sweeps, ``SuperpositionResult``), ``report`` (pictures, HTML, the
tour section). The toy models themselves live below, in ``mechscope.toy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mechscope.errors import ConfigError
from mechscope.toy.and_task import AndTaskConfig
from mechscope.toy.dictionary_check import DictionaryCheckConfig
from mechscope.toy.superposition import ToyTrainConfig


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
