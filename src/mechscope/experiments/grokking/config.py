"""Grokking of modular addition: the settings of a run, its presets, and the model they define.

Following Nanda et al. (2023): a 1-layer transformer (d_model 128, 4 heads × 32, d_mlp 512, ReLU, no
LayerNorm, no biases) is trained full-batch with AdamW on a fraction of the ``a + b mod p`` pairs. It
first memorises the training pairs (train accuracy 100%, test accuracy near chance), then, pushed by
weight decay, forms a Fourier-multiplication circuit and "groks" (test accuracy → 100%). The analysis
(``mechscope.analysis.fourier``) finds the key frequencies and tracks progress measures over checkpoints.

Presets (``PRESETS``): ``paper`` is the paper's setting (30% of pairs, lr 1e-3, weight decay 1, 40k
epochs: hours on a CPU); ``fast`` (the default) groks within minutes on 2 cores by raising the learning
rate tenfold (see ``FAST`` below) and stops a while after test accuracy passes 99%.

The case study (``mechscope.experiments.grokking``) has four modules, each importing only those before it:
``config`` (this), ``run`` (training, loading a run), ``analysis`` (progress measures, key frequencies),
``report`` (pictures, the report and tour section).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mechscope.data.tasks.modular import ModularConfig
from mechscope.errors import ConfigError
from mechscope.validation import build as build_config
from mechscope.validation import check_types

EXPERIMENT = "grokking"


@dataclass(frozen=True, kw_only=True)
class GrokkingConfig:
    """Task, model and optimiser of one grokking run."""

    p: int = 113
    """Modulus."""
    train_frac: float = 0.3
    """Fraction of the p² pairs used for training."""
    seed: int = 0
    """Seeds the split, the initialisation and the trainer."""
    epochs: int = 40_000
    """Full-batch updates."""
    lr: float = 1e-3
    """AdamW learning rate (after a 10-step linear warm-up)."""
    weight_decay: float = 1.0
    """AdamW weight decay: what drives the memorising solution out."""
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW betas."""
    warmup_steps: int = 10
    """Linear warm-up length."""
    d_model: int = 128
    """Residual width."""
    n_heads: int = 4
    """Attention heads."""
    d_head: int = 32
    """Head dimension."""
    d_mlp: int = 512
    """MLP neurons (ReLU)."""
    eval_every: int = 10
    """Measure test loss/accuracy every N epochs."""
    checkpoint_every: int = 100
    """Write a checkpoint every N epochs (the analysis runs over all of them)."""
    stop_test_acc: float | None = None
    """If set, stop once test accuracy has reached this value and ``stop_margin`` more training has passed."""
    stop_margin: float = 0.25
    """After reaching ``stop_test_acc`` at epoch e, continue until epoch ``(1 + stop_margin) * e``."""

    def __post_init__(self) -> None:
        check_types(self)
        ModularConfig(p=self.p, train_frac=self.train_frac, seed=self.seed)  # validates p / train_frac
        for f in ("epochs", "d_model", "n_heads", "d_head", "d_mlp", "eval_every", "checkpoint_every"):
            v = getattr(self, f)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{f} must be a positive int, got {v!r}")
        if self.stop_test_acc is not None and not 0 < self.stop_test_acc <= 1:
            raise ConfigError(f"stop_test_acc must be in (0, 1] or None, got {self.stop_test_acc}")
        if self.stop_margin < 0:
            raise ConfigError(f"stop_margin must be >= 0, got {self.stop_margin}")

    def replace(self, **changes: Any) -> GrokkingConfig:
        """A copy with fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GrokkingConfig:
        """Inverse of ``to_dict``; unknown keys, missing fields and wrong types raise ``ConfigError``."""
        return build_config(cls, d, "run.json grokking config: ")


PAPER = GrokkingConfig()
"""Nanda et al.'s setting: p=113, 30% train, lr 1e-3, wd 1.0, betas (0.9, 0.98), 40k full-batch epochs."""
FAST = GrokkingConfig(lr=1e-2, epochs=3000, eval_every=10, checkpoint_every=50, stop_test_acc=0.99,
                      stop_margin=0.4)
"""Same task, model, 30% split and weight decay; 10× the learning rate, so memorisation takes ~60 epochs
and grokking a few hundred; stops 40% after test accuracy first reaches 99% (the clean-up phase)."""
QUICK = GrokkingConfig(p=31, train_frac=0.5, lr=1e-2, weight_decay=2.0, epochs=1500, d_mlp=256, eval_every=10,
                       checkpoint_every=25, stop_test_acc=0.99, stop_margin=0.3)
"""A small-p run for tests and the tour (≈400 epochs, well under a minute on a CPU)."""
PRESETS: dict[str, GrokkingConfig] = {"fast": FAST, "paper": PAPER, "quick": QUICK}


def model_config(cfg: GrokkingConfig) -> Any:
    """The paper's 1-layer model for modulus ``cfg.p`` (vocabulary p numbers + '=', p outputs)."""
    from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig, PositionalConfig

    return ModelConfig(d_model=cfg.d_model, n_layers=1, d_vocab=cfg.p + 1, d_vocab_out=cfg.p, n_ctx=3,
                       attention=AttentionConfig(n_heads=cfg.n_heads, d_head=cfg.d_head),
                       mlp=MLPConfig(d_mlp=cfg.d_mlp, act="relu", bias=False), norm=NormConfig(kind="none"),
                       positional=PositionalConfig(kind="learned"), name=f"grokking-p{cfg.p}", architecture="toy")
