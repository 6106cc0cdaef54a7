"""``TrainConfig``: what the trainer does at each step (optimiser, learning-rate schedule, cadence).

The learning rate is a pure function of the step (``lr_at``), so a resumed run needs no scheduler
state: warm-up is linear from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps`` updates, then the
schedule (``constant``, ``cosine`` or ``linear`` decay to ``min_lr_ratio * lr`` at ``steps``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from mechscope.errors import ConfigError
from mechscope.validation import build, check_types

Schedule = Literal["constant", "cosine", "linear"]
Precision = Literal["float32", "bfloat16"]

# fields a resumed run may change (everything else must match the checkpoint)
RESUMABLE_CHANGES = frozenset({"steps", "progress", "precision"})


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimiser (AdamW), schedule, and how often to evaluate, log and checkpoint.

    Example:
        >>> cfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, schedule="cosine")
        >>> round(cfg.lr_at(0), 6), round(cfg.lr_at(9), 6), round(cfg.lr_at(100), 6)
        (0.0001, 0.001, 0.0)
    """

    steps: int
    """Number of optimiser updates in the whole run (a full-batch run: one update per epoch)."""
    lr: float = 1e-3
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay (applied to every parameter)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW moment decay rates."""
    eps: float = 1e-8
    """AdamW denominator epsilon."""
    warmup_steps: int = 0
    """Linear warm-up length in updates (0 = none)."""
    schedule: Schedule = "constant"
    """Learning-rate shape after warm-up."""
    min_lr_ratio: float = 0.0
    """Final learning rate of ``cosine``/``linear`` decay as a fraction of ``lr``."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value; None = no clipping."""
    eval_every: int | None = None
    """Run the evaluation callbacks every N updates (and at step 0 and at the end); None = only at the end."""
    log_every: int = 1
    """Append a line to ``metrics.jsonl`` every N updates (evaluation steps are always logged)."""
    checkpoint_every: int | None = None
    """Write a resumable checkpoint every N updates (and at the end); None = only at the end."""
    keep_optimizer_state: int | None = 2
    """Keep the optimiser/RNG state only in the newest N checkpoints (older ones keep weights, for
    analysis over training); None keeps everything."""
    seed: int = 0
    """Seeds torch, ``random`` and numpy at the start of a fresh run (a resumed run restores them)."""
    progress: bool = True
    """Show a tqdm progress bar with live loss/accuracy."""
    precision: Precision = "float32"
    """Compute precision of the forward/backward pass. ``bfloat16`` runs ``loss_fn`` under
    ``torch.autocast`` (matmuls in bf16; on CPUs with AMX several times faster than fp32) while the weights,
    gradients and AdamW state stay float32, so checkpoints and analyses are unchanged."""

    def __post_init__(self) -> None:
        check_types(self)
        _check(isinstance(self.steps, int) and self.steps > 0, f"steps must be a positive int, got {self.steps!r}")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
               f"betas must be two numbers in [0, 1), got {self.betas}")
        _check(self.eps > 0, f"eps must be > 0, got {self.eps}")
        _check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(self.schedule in ("constant", "cosine", "linear"),
               f"schedule must be 'constant', 'cosine' or 'linear', got {self.schedule!r}")
        _check(self.precision in ("float32", "bfloat16"),
               f"precision must be 'float32' or 'bfloat16', got {self.precision!r}")
        _check(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        _check(self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0 or None, got {self.grad_clip}")
        for name in ("eval_every", "checkpoint_every", "keep_optimizer_state"):
            v = getattr(self, name)
            _check(v is None or (isinstance(v, int) and v > 0), f"{name} must be a positive int or None, got {v!r}")
        _check(isinstance(self.log_every, int) and self.log_every > 0,
               f"log_every must be a positive int, got {self.log_every!r}")

    def lr_at(self, step: int) -> float:
        """Learning rate used for update number ``step`` (0-based)."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return self.lr
        span = max(self.steps - self.warmup_steps, 1)
        frac = min(max(step - self.warmup_steps, 0) / span, 1.0)
        if self.schedule == "cosine":
            shape = 0.5 * (1 + math.cos(math.pi * frac))
        else:
            shape = 1 - frac
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * shape)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys, missing fields and wrong types raise ``ConfigError``."""
        return build(cls, d)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
