"""``TrainerConfig``: optimisation, schedules, dead-latent window, logging and checkpoint settings."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mechscope.errors import ConfigError
from mechscope.validation import check_types


@dataclass(frozen=True, kw_only=True)
class TrainerConfig:
    """How to train a dictionary (the dictionary's own config says what it is)."""

    total_steps: int
    """Optimiser steps (one batch each)."""
    lr: float = 4e-4
    """Peak Adam learning rate."""
    lr_warmup_steps: int = 0
    """Linear warm-up of the learning rate from 0 over this many steps."""
    lr_decay_steps: int = 0
    """Linear decay to ``lr_end`` over the last this-many steps (0: constant after warm-up)."""
    lr_end: float = 0.0
    """Learning rate at the end of the decay."""
    sparsity_warmup_steps: int = 0
    """Linear warm-up of the sparsity coefficient from 0 (ReLU/JumpReLU/Gated/crosscoder)."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.999
    """Adam beta2."""
    grad_clip_norm: float | None = 1.0
    """Clip the global gradient norm (None disables)."""
    dead_window_tokens: int = 1_000_000
    """A latent that has not fired for this many tokens is dead (aux-k revives those)."""
    norm_estimate_batches: int = 4
    """Batches used to estimate ``input_scale`` when the dictionary asks for ``expected_norm``."""
    log_every: int = 10
    """Write a metrics JSONL line (and refresh the progress bar) every this many steps."""
    checkpoint_every: int | None = None
    """Write an atomic checkpoint every this many steps (None: only at the end, if ``out_dir``)."""
    out_dir: str | None = None
    """Directory of checkpoints, ``metrics.jsonl`` and the final dictionary; None keeps nothing on disk."""
    keep_checkpoints: int = 1
    """Older checkpoints beyond this many are deleted."""
    skip_seen_batches: bool = True
    """On resume, discard the batches the checkpoint already trained on so the data stream lines up."""
    progress: bool = True
    """Show a tqdm bar with live L0, explained variance and dead fraction."""
    seed: int = 0
    """Seed set at the start of ``fit``."""
    precision: str = "float32"
    """``float32``, or ``bfloat16``: the loss's forward runs under ``torch.autocast`` to bf16 (the big
    encoder/decoder matmuls in bf16; their backward matmuls too), while parameters, gradients and Adam
    state stay float32. On CPUs with AMX (``lscpu`` shows ``amx_bf16``) bf16 matmuls are several times
    faster; elsewhere use float32."""

    def __post_init__(self) -> None:
        check_types(self)
        if not isinstance(self.total_steps, int) or self.total_steps <= 0:
            raise ConfigError(f"total_steps must be a positive int, got {self.total_steps!r}")
        if not (math.isfinite(self.lr) and self.lr > 0) or not (math.isfinite(self.lr_end) and self.lr_end >= 0):
            raise ConfigError(f"lr must be > 0 and lr_end >= 0, got lr={self.lr}, lr_end={self.lr_end}")
        for name in ("lr_warmup_steps", "lr_decay_steps", "sparsity_warmup_steps", "norm_estimate_batches"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr_warmup_steps + self.lr_decay_steps > self.total_steps:
            raise ConfigError(f"lr_warmup_steps + lr_decay_steps ({self.lr_warmup_steps} + {self.lr_decay_steps}) "
                              f"exceeds total_steps={self.total_steps}")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise ConfigError(f"Adam betas must be in [0, 1), got {self.adam_beta1}, {self.adam_beta2}")
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise ConfigError(f"grad_clip_norm must be None or > 0, got {self.grad_clip_norm}")
        if self.dead_window_tokens <= 0 or self.log_every <= 0 or self.keep_checkpoints <= 0:
            raise ConfigError("dead_window_tokens, log_every and keep_checkpoints must be positive")
        if self.precision not in ("float32", "bfloat16"):
            raise ConfigError(f"precision must be 'float32' or 'bfloat16', got {self.precision!r}")
        if self.checkpoint_every is not None and self.checkpoint_every <= 0:
            raise ConfigError(f"checkpoint_every must be None or > 0, got {self.checkpoint_every}")

    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (0-based)."""
        if self.lr_warmup_steps and step < self.lr_warmup_steps:
            return self.lr * (step + 1) / self.lr_warmup_steps
        decay_start = self.total_steps - self.lr_decay_steps
        if self.lr_decay_steps and step >= decay_start:
            frac = (step - decay_start + 1) / self.lr_decay_steps
            return self.lr + (self.lr_end - self.lr) * frac
        return self.lr

    def sparsity_scale_at(self, step: int) -> float:
        """Multiplier in (0, 1] of the sparsity coefficient at ``step``."""
        if self.sparsity_warmup_steps and step < self.sparsity_warmup_steps:
            return (step + 1) / self.sparsity_warmup_steps
        return 1.0


__all__ = ["TrainerConfig"]
