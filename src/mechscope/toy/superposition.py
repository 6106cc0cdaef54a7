"""The ReLU-output toy model of superposition (Elhage et al. 2022), many instances trained at once.

A sparse input ``x`` has ``n_features`` features; feature ``i`` is present with probability
``p = 1 - S`` (``S`` is the sparsity) and then has a magnitude drawn uniformly from [0, 1]. The model
squeezes it into ``d_hidden < n_features`` dimensions and reads it back out::

    h = x W            (W: [n_features, d_hidden], row W_i is feature i's direction)
    x̂ = ReLU(h Wᵀ + b)
    loss = E_x Σ_i I_i (x_i − x̂_i)²      (I_i is feature i's importance)

With dense inputs the model keeps the ``d_hidden`` most important features in orthogonal directions and
drops the rest (like PCA). With sparse inputs it stores *more* features than it has dimensions, in
nearly-orthogonal directions, because interference between two features only costs when both are present
and the ReLU filters small negative interference: that is **superposition**.

Every parameter carries a leading ``instances`` axis so that one batched tensor program trains a whole
sweep (different sparsities, importances, seeds). Instance ``i`` uses seed ``cfg.seed + i`` for both its
initial weights and its data stream (see :mod:`mechscope.toy.counter_rng`), so training an instance inside
a batch gives the same weights as training it alone with that seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor, nn

from mechscope.errors import ConfigError, ShapeError
from mechscope.toy import counter_rng

_STREAM_INIT = 1
_STREAM_DATA = 3
_STREAM_EVAL = 5
_EVAL_STEP_OFFSET = 1 << 30  # evaluation batches never collide with training steps


@dataclass(frozen=True, kw_only=True)
class ToyModelConfig:
    """Shape and seed of a batch of toy models."""

    n_features: int
    """Number of input features ``n`` (> ``d_hidden`` for superposition to be possible)."""
    d_hidden: int
    """Hidden dimensions ``m``."""
    n_instances: int = 1
    """How many independent models to train side by side."""
    seed: int = 0
    """Instance ``i`` uses seed ``seed + i`` (for its initial weights and its data stream)."""

    def __post_init__(self) -> None:
        for name in ("n_features", "d_hidden", "n_instances"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ToyModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0 or self.seed + self.n_instances > counter_rng.SEED_LIMIT:
            raise ConfigError(f"ToyModelConfig.seed must satisfy 0 <= seed and seed + n_instances <= 2**31, "
                              f"got seed={self.seed}, n_instances={self.n_instances}")


@dataclass(frozen=True, kw_only=True)
class ToyTrainConfig:
    """How to train a batch of toy models (Adam, fresh synthetic data each step)."""

    steps: int = 5000
    """Optimiser steps."""
    batch_size: int = 1024
    """Samples per instance per step."""
    lr: float = 1e-3
    """Adam learning rate (constant)."""
    log_every: int = 100
    """Record the per-instance training loss every this many steps."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.log_every < 1:
            raise ConfigError(f"ToyTrainConfig.steps, batch_size and log_every must be >= 1, got "
                              f"{self.steps}, {self.batch_size}, {self.log_every}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"ToyTrainConfig.lr must be a positive finite float, got {self.lr}")


def _per_instance(t: Tensor | float, cfg: ToyModelConfig, what: str) -> Float[Tensor, "instances n_features"]:
    """Broadcast a scalar, ``[n_features]``, ``[instances]`` or ``[instances, n_features]`` value."""
    t = torch.as_tensor(t, dtype=torch.float32)
    inst, n = cfg.n_instances, cfg.n_features
    if t.ndim == 1 and t.shape[0] == inst and inst != n:
        t = t[:, None]
    elif t.ndim == 1 and t.shape[0] == inst == n:
        raise ShapeError(f"{what}: a 1-d tensor of length {n} is ambiguous when n_instances == n_features; "
                         f"pass shape [instances, n_features] = [{inst}, {n}]")
    try:
        return t.expand(inst, n).clone()
    except RuntimeError:
        raise ShapeError(f"{what}: expected a scalar or shape [{n}], [{inst}] or [{inst}, {n}], "
                         f"got {tuple(t.shape)}") from None


class ToyModel(nn.Module):
    """``n_instances`` ReLU-output toy models with tied weights, as one module.

    Parameters: ``W [instances, n_features, d_hidden]``, ``b_final [instances, n_features]``.
    Buffers: ``importance`` and ``feature_probability`` ``[instances, n_features]``, ``seeds [instances]``.
    """

    importance: Tensor
    feature_probability: Tensor
    seeds: Tensor

    def __init__(self, cfg: ToyModelConfig, *, importance: Tensor | float = 1.0,
                 feature_probability: Tensor | float = 1.0) -> None:
        super().__init__()
        self.cfg = cfg
        imp = _per_instance(importance, cfg, "importance")
        prob = _per_instance(feature_probability, cfg, "feature_probability")
        if bool((imp < 0).any()) or bool(((prob <= 0) | (prob > 1)).any()):
            raise ConfigError("importance must be >= 0 and feature_probability (1 - sparsity) in (0, 1]")
        seeds = torch.arange(cfg.n_instances, dtype=torch.int64) + cfg.seed
        self.register_buffer("importance", imp)
        self.register_buffer("feature_probability", prob)
        self.register_buffer("seeds", seeds)
        std = math.sqrt(2.0 / (cfg.n_features + cfg.d_hidden))  # Xavier normal, as in the paper
        w = counter_rng.normal(seeds, _STREAM_INIT, (cfg.n_features, cfg.d_hidden)) * std
        self.W = nn.Parameter(w)
        self.b_final = nn.Parameter(torch.zeros(cfg.n_instances, cfg.n_features))

    def hidden(self, x: Float[Tensor, "instances batch n_features"]) -> Float[Tensor, "instances batch d_hidden"]:
        """The bottleneck activations ``h = x W``."""
        return torch.bmm(x, self.W)

    def forward(self, x: Float[Tensor, "instances batch n_features"]
                ) -> Float[Tensor, "instances batch n_features"]:
        """Reconstruction ``ReLU(h Wᵀ + b)``."""
        if x.ndim != 3 or x.shape[0] != self.cfg.n_instances or x.shape[2] != self.cfg.n_features:
            raise ShapeError(f"ToyModel input: expected [instances={self.cfg.n_instances}, batch, "
                             f"n_features={self.cfg.n_features}], got {tuple(x.shape)}")
        out = torch.baddbmm(self.b_final.unsqueeze(1), self.hidden(x), self.W.transpose(1, 2))
        return torch.relu(out)

    def loss_per_instance(self, x: Float[Tensor, "instances batch n_features"]) -> Float[Tensor, " instances"]:
        """Importance-weighted squared error, summed over features and averaged over the batch."""
        err = (self(x) - x).square_()
        return (err * self.importance.unsqueeze(1)).sum(-1).mean(-1)

    def generate_batch(self, batch_size: int, step: int, *, stream: int = _STREAM_DATA
                       ) -> Float[Tensor, "instances batch n_features"]:
        """The data of training step ``step``: row i is a pure function of (seed_i, step)."""
        present, magnitude = counter_rng.uniform_pair(self.seeds, step, stream,
                                                      (batch_size, self.cfg.n_features))
        mask = present < self.feature_probability.unsqueeze(1)
        return magnitude.mul_(mask)

    @torch.no_grad()
    def evaluate(self, batch_size: int = 8192, n_batches: int = 1) -> Float[Tensor, " instances"]:
        """Mean loss on fixed held-out batches (a different random stream from training)."""
        total = torch.zeros(self.cfg.n_instances)
        for k in range(n_batches):
            x = self.generate_batch(batch_size, _EVAL_STEP_OFFSET + k, stream=_STREAM_EVAL)
            total += self.loss_per_instance(x)
        return total / n_batches


class ToyTrainResult(NamedTuple):
    """What :func:`train_toy_model` returns (the model itself is trained in place)."""

    loss_history: Float[Tensor, "n_logs instances"]
    """Training loss per instance, recorded every ``log_every`` steps."""
    logged_steps: list[int]
    """The step of each row of ``loss_history``."""
    final_loss: Float[Tensor, " instances"]
    """Held-out loss per instance after training."""


def train_toy_model(model: ToyModel, cfg: ToyTrainConfig) -> ToyTrainResult:
    """Train every instance of ``model`` with Adam on fresh synthetic data, in one batched loop.

    The summed loss has a block-diagonal gradient (instance i's loss only touches instance i's
    parameters) and Adam is elementwise, so each instance follows the trajectory it would follow alone.
    """
    from tqdm.auto import tqdm

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: list[Tensor] = []
    steps: list[int] = []
    bar = tqdm(range(cfg.steps), desc="toy model", disable=not cfg.progress, leave=False)
    for step in bar:
        x = model.generate_batch(cfg.batch_size, step)
        loss = model.loss_per_instance(x)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            history.append(loss.detach().clone())
            steps.append(step)
            bar.set_postfix(loss=f"{float(loss.detach().mean()):.4g}")
    return ToyTrainResult(torch.stack(history), steps, model.evaluate())
