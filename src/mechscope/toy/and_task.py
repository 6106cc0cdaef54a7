"""Computation in superposition: a one-hidden-layer ReLU MLP computing every pairwise AND.

The task (an open problem posed by Elhage et al. 2022): ``n_vars`` binary variables, at most two on at a
time; the network must output ``x_a AND x_b`` for all ``n_vars (n_vars - 1) / 2`` pairs::

    hidden = ReLU(x W_in + b_in)          (W_in: [n_vars, width])
    out = hidden W_out + b_out            (one output per pair, linear readout)

Two objectives, because the choice decides whether the task needs a nonlinear hidden layer at all:

* ``"mse"`` (default): ``out`` must *equal* the AND (squared error); an output counts as right when it is
  within ``tolerance`` (default 0.25) of the 0/1 target. A linear function of ``x`` cannot do this for
  any tolerance below 1/3 (from ``f(∅), f(a), f(b) ≈ 0`` follows ``f(ab) = f(a) + f(b) − f(∅) ≈ 0``), so
  every AND must come from the hidden ReLUs: this is the computation-in-superposition question.
* ``"bce"``: ``out`` is a logit and the AND is predicted on when it is > 0. Each AND is then a linearly
  separable threshold (``x_a + x_b > 1.5``), so the hidden layer only has to *encode* the sparse input
  and the output threshold does the AND — an easier task, kept as a contrast.

Because at most two variables are on, the whole input distribution is small: the empty input, the
``n_vars`` single inputs and the pair inputs. We train full-batch on all of them (uniform weights, binary
cross-entropy) and measure accuracy exactly, with no sampling noise. The obvious solution uses one neuron
per pair (``ReLU(x_a + x_b - 1)``); the question is whether fewer neurons than ANDs can do it.

Widths are swept in one batched program: every instance has ``max(widths)`` neurons and a fixed mask
switches off the ones beyond its width (masked neurons get zero gradient and contribute nothing).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor, nn

from mechscope.errors import ConfigError
from mechscope.toy import counter_rng


@dataclass(frozen=True, kw_only=True)
class AndTaskConfig:
    """The pairwise-AND task and its width sweep."""

    n_vars: int = 10
    """Number of binary input variables (the task has ``n_vars (n_vars - 1) / 2`` AND outputs)."""
    widths: tuple[int, ...] = (2, 4, 6, 8, 12, 16, 24, 32, 45)
    """Hidden widths to sweep (one batched run)."""
    seeds_per_width: int = 3
    """Independent restarts per width; results report the best (lowest loss) restart."""
    steps: int = 3000
    """Full-batch Adam steps."""
    lr: float = 1e-2
    """Adam learning rate."""
    seed: int = 0
    """Instance ``k`` uses seed ``seed + k``."""
    objective: Literal["mse", "bce"] = "mse"
    """``"mse"``: outputs must equal the AND within ``tolerance``; ``"bce"``: logits thresholded at 0."""
    tolerance: float = 0.25
    """For ``"mse"``: an output is right when ``|out − target| < tolerance`` (must be in (0, 0.5])."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self) -> None:
        if self.objective not in ("mse", "bce"):
            raise ConfigError(f"AndTaskConfig.objective must be 'mse' or 'bce', got {self.objective!r}")
        if not 0 < self.tolerance <= 0.5:
            raise ConfigError(f"AndTaskConfig.tolerance must be in (0, 0.5], got {self.tolerance}")
        if self.n_vars < 2:
            raise ConfigError(f"AndTaskConfig.n_vars must be >= 2, got {self.n_vars}")
        if not self.widths or min(self.widths) < 1:
            raise ConfigError(f"AndTaskConfig.widths must be a non-empty tuple of ints >= 1, got {self.widths}")
        if self.seeds_per_width < 1 or self.steps < 1:
            raise ConfigError(f"AndTaskConfig.seeds_per_width and steps must be >= 1, "
                              f"got {self.seeds_per_width}, {self.steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"AndTaskConfig.lr must be a positive finite float, got {self.lr}")
        if self.seed < 0 or self.seed + len(self.widths) * self.seeds_per_width > counter_rng.SEED_LIMIT:
            raise ConfigError(f"AndTaskConfig.seed must be >= 0 and leave room for all instances, got {self.seed}")

    @property
    def n_ands(self) -> int:
        """Number of AND outputs ``n_vars (n_vars - 1) / 2``."""
        return self.n_vars * (self.n_vars - 1) // 2


class AndDataset(NamedTuple):
    """Every input the task allows and its AND targets."""

    inputs: Float[Tensor, "n_inputs n_vars"]
    """The empty input, then single inputs, then pair inputs (0/1 floats)."""
    targets: Float[Tensor, "n_inputs n_ands"]
    """``targets[x, p] = 1`` iff both variables of pair ``p`` are on in input ``x``."""
    pairs: list[tuple[int, int]]
    """The variable pair of each output, in ``itertools.combinations`` order."""


def and_dataset(n_vars: int) -> AndDataset:
    """Enumerate the task: ``1 + n_vars + n_ands`` inputs."""
    pairs = list(itertools.combinations(range(n_vars), 2))
    eye = torch.eye(n_vars)
    pair_idx = torch.tensor(pairs)
    x = torch.cat([torch.zeros(1, n_vars), eye, eye[pair_idx[:, 0]] + eye[pair_idx[:, 1]]])
    y = x[:, pair_idx[:, 0]] * x[:, pair_idx[:, 1]]
    return AndDataset(x, y, pairs)


class AndMLP(nn.Module):
    """A batch of one-hidden-layer ReLU MLPs of different widths (padded to the widest, masked)."""

    mask: Tensor
    widths: Tensor

    def __init__(self, n_vars: int, widths: Tensor, seed: int) -> None:
        super().__init__()
        n_inst, h_max, n_out = widths.shape[0], int(widths.max()), n_vars * (n_vars - 1) // 2
        seeds = torch.arange(n_inst, dtype=torch.int64) + seed
        self.register_buffer("mask", (torch.arange(h_max)[None, :] < widths[:, None]).float())
        self.register_buffer("widths", widths.clone())
        # neuron-major draws: neuron j's init depends only on (seed, j), never on the padded width
        w_in = counter_rng.normal(seeds, 11, (h_max, n_vars)).transpose(1, 2) / math.sqrt(n_vars)
        w_out = counter_rng.normal(seeds, 13, (h_max, n_out)) / math.sqrt(n_vars)
        self.W_in = nn.Parameter(w_in * self.mask[:, None, :])
        self.b_in = nn.Parameter(torch.zeros(n_inst, h_max))
        self.W_out = nn.Parameter(w_out * self.mask[:, :, None])
        self.b_out = nn.Parameter(torch.zeros(n_inst, n_out))

    def hidden(self, x: Float[Tensor, "n_inputs n_vars"]) -> Float[Tensor, "instances n_inputs h_max"]:
        """Post-ReLU hidden activations (zero for masked neurons)."""
        pre = torch.einsum("xn,inh->ixh", x, self.W_in) + self.b_in[:, None, :]
        return torch.relu(pre) * self.mask[:, None, :]

    def forward(self, x: Float[Tensor, "n_inputs n_vars"]) -> Float[Tensor, "instances n_inputs n_ands"]:
        """AND logits for every instance and input."""
        return torch.baddbmm(self.b_out[:, None, :], self.hidden(x), self.W_out)


class AndSweepResult(NamedTuple):
    """What :func:`train_and_sweep` returns: per-instance measurements and the trained model."""

    model: AndMLP
    """The trained batch of MLPs (instance ``k`` has width ``widths[k]``)."""
    widths: Tensor
    """Width of each instance ``[instances]``."""
    loss: Tensor
    """Final loss (summed over outputs, mean over inputs) ``[instances]``."""
    exact_match: Tensor
    """Fraction of inputs whose every AND output is right ``[instances]``."""
    output_accuracy: Tensor
    """Fraction of (input, output) entries right ``[instances]``."""
    ands_computed: Tensor
    """Number of AND outputs right on every input ``[instances]``."""


def and_metrics(out: Float[Tensor, "instances n_inputs n_ands"], targets: Float[Tensor, "n_inputs n_ands"],
                cfg: AndTaskConfig) -> tuple[Tensor, Tensor, Tensor]:
    """(exact-match rate, output accuracy, ANDs right on every input), each ``[instances]``."""
    if cfg.objective == "bce":
        right = (out > 0) == (targets > 0.5)
    else:
        right = (out - targets).abs() < cfg.tolerance
    return right.all(-1).float().mean(-1), right.float().mean((-1, -2)), right.all(-2).sum(-1)


def _loss(out: Tensor, target: Tensor, cfg: AndTaskConfig) -> Tensor:
    """Per-instance loss, summed over outputs and averaged over inputs."""
    if cfg.objective == "bce":
        per = nn.functional.binary_cross_entropy_with_logits(out, target, reduction="none")
    else:
        per = (out - target).square()
    return per.sum(-1).mean(-1)


def train_and_sweep(cfg: AndTaskConfig) -> AndSweepResult:
    """Train every (width, restart) instance in one batched full-batch Adam loop."""
    from tqdm.auto import tqdm

    data = and_dataset(cfg.n_vars)
    widths = torch.tensor(cfg.widths, dtype=torch.int64).repeat_interleave(cfg.seeds_per_width)
    model = AndMLP(cfg.n_vars, widths, cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    target = data.targets.expand(widths.shape[0], -1, -1)
    for _ in tqdm(range(cfg.steps), desc="AND sweep", disable=not cfg.progress, leave=False):
        loss = _loss(model(data.inputs), target, cfg)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    with torch.no_grad():
        out = model(data.inputs)
        loss = _loss(out, target, cfg)
        exact, acc, n_ok = and_metrics(out, data.targets, cfg)
    return AndSweepResult(model, widths, loss, exact, acc, n_ok)


def best_per_width(res: AndSweepResult) -> dict[int, int]:
    """For each width, the instance index of the restart with the lowest loss."""
    best: dict[int, int] = {}
    for k, (w, lo) in enumerate(zip(res.widths.tolist(), res.loss.tolist(), strict=True)):
        if w not in best or lo < float(res.loss[best[w]]):
            best[w] = k
    return best
