"""Distributed alignment search (Geiger et al. 2023; boundless variant: Wu et al. 2023) and IIA.

DAS learns an orthogonal rotation R of one activation (``torch.nn.utils.parametrizations.orthogonal``, so R
stays exactly orthogonal during gradient descent) such that swapping the first ``dims[v]`` rotated
coordinates between a base and a source input makes the *network* output what the *causal model* outputs
when variable ``v`` is set to its source value. Several variables get consecutive blocks of coordinates.
The network is frozen; only R (and, boundless, the block widths) train, with cross-entropy to the
counterfactual labels.

*Boundless* DAS replaces the fixed blocks by soft masks ``σ((i - a_v)/τ)·σ((a_v + w_v - i)/τ)`` whose widths
``w_v`` are learned (with a penalty on their size) while the temperature τ anneals; evaluation uses the
hard mask ``a_v <= i < a_v + round(w_v)``.

Interchange-intervention accuracy (IIA): the share of counterfactuals where the intervened network's argmax
equals the causal model's intervened output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Int
from torch import Tensor, nn
from torch.nn.utils.parametrizations import orthogonal

from mechscope.abstraction.interchange import block_masks, capture, swap_hook
from mechscope.errors import ConfigError, ShapeError


@dataclass(frozen=True)
class InterchangeData:
    """Counterfactuals as tensors: inputs of base and of each variable's source, and the intervened labels.

    Where a row does not intervene on variable v, ``sources[v]`` holds the base input (the swap is a no-op).
    """

    base: Tensor
    """Base inputs [n ...] (token ids or feature vectors)."""
    sources: list[Tensor]
    """One source input tensor per variable, each shaped like ``base``."""
    labels: Int[Tensor, " n"]
    """The causal model's output under the interchange (a class id)."""

    def __post_init__(self) -> None:
        n = self.base.shape[0]
        if self.labels.shape != (n,):
            raise ShapeError(f"labels must have one entry per base input ({n}), got {tuple(self.labels.shape)}")
        bad = [tuple(s.shape) for s in self.sources if s.shape != self.base.shape]
        if bad or not self.sources:
            raise ShapeError(f"need >= 1 source tensor shaped like base {tuple(self.base.shape)}, got {bad or 'none'}")

    def __len__(self) -> int:
        return int(self.base.shape[0])

    def rows(self, idx: Tensor) -> InterchangeData:
        return InterchangeData(self.base[idx], [s[idx] for s in self.sources], self.labels[idx])


def from_counterfactuals(cfs: Sequence[Any], variables: Sequence[str], encode: Callable[[dict[str, Any]], Tensor],
                         label: Callable[[Any], int] = int) -> InterchangeData:
    """``InterchangeData`` from ``causal_model.Counterfactual`` triples (``encode``: inputs dict -> tensor)."""
    base = torch.stack([encode(c.base) for c in cfs])
    sources = [torch.stack([encode(c.sources[v]) if v in c.sources else encode(c.base) for c in cfs])
               for v in variables]
    return InterchangeData(base, sources, torch.tensor([label(c.label) for c in cfs]))


class RotatedInterchange(nn.Module):
    """A learnable orthogonal rotation + masks assigning rotated coordinates to variables."""

    def __init__(self, d: int, dims: Sequence[int], *, boundless: bool = False, seed: int = 0,
                 rotation: Tensor | None = None, partial: bool = False) -> None:
        super().__init__()
        self.d, self.dims, self.boundless = d, list(dims), boundless
        self.register_buffer("fixed", block_masks(d, dims))  # validates dims against d
        torch.manual_seed(seed)
        self.partial = partial and not boundless and rotation is None
        self.width = sum(self.dims) if self.partial else d
        # partial: only the [d K] columns the masks use, orthonormal (Householder; far cheaper than a d x d map)
        self.rot = orthogonal(nn.Linear(d, self.width, bias=False))
        if rotation is not None:
            if rotation.shape != (d, d):
                raise ShapeError(f"rotation must be [{d} {d}], got {tuple(rotation.shape)}")
            with torch.no_grad():
                self.rot.weight = rotation.float()
        n = len(self.dims)
        self.starts = torch.tensor([float(sum(self.dims[:v])) for v in range(n)])
        self.room = torch.tensor([float(d // n) if boundless else float(k) for k in self.dims])
        if boundless:
            self.starts = torch.arange(n, dtype=torch.float32) * (d // n)
        self.width_logit = nn.Parameter(torch.zeros(n))
        self.temperature = 1.0

    @property
    def rotation(self) -> Tensor:
        """[d d], or [d K] orthonormal columns when ``partial``."""
        w = cast(Tensor, self.rot.weight)
        return w.T if self.partial else w

    def full_rotation(self) -> Tensor:
        """A [d d] rotation whose first columns are the learned ones (completed by a seeded QR if partial)."""
        from mechscope.abstraction.interchange import rotation_from_basis

        r = self.rotation.detach()
        return rotation_from_basis(r) if self.partial else r

    def widths(self) -> Tensor:
        """Current (soft) number of coordinates per variable."""
        return self.room * torch.sigmoid(self.width_logit) if self.boundless else self.room

    def masks(self, hard: bool = False) -> Tensor:
        """[n_vars d] masks: the fixed blocks, or boundless soft / hard ones."""
        if not self.boundless:
            fixed = cast(Tensor, self.fixed)
            return fixed[:, : self.width] if self.partial and not hard else fixed
        i = torch.arange(self.d, dtype=torch.float32)[None, :]
        a, w = self.starts[:, None], self.widths()[:, None]
        if hard:
            return ((i >= a) & (i < a + torch.round(w).clamp_min(1))).float()
        t = self.temperature
        return torch.sigmoid((i - a + 0.5) / t) * torch.sigmoid((a + w - i - 0.5) / t)


def _output(out: Tensor) -> Tensor:
    return out[:, -1] if out.dim() == 3 else out


def _forward(model: Any, hook: str, base: Tensor, src_acts: list[Tensor], rot: Tensor | None, masks: Tensor,
             positions: Sequence[int] | None, kwargs: dict[str, Any]) -> Tensor:
    with model.hooks(fwd=[(hook, swap_hook(src_acts, rot, masks, positions))]):
        return _output(model(base, **kwargs))


def iia(model: Any, hook: str, data: InterchangeData, rotation: Tensor | None, masks: Tensor, *,
        positions: Sequence[int] | None = None, batch_size: int = 512, **kwargs: Any) -> float:
    """Interchange-intervention accuracy of a fixed rotation and masks on ``data``."""
    hits = 0
    with torch.no_grad():
        for lo in range(0, len(data), batch_size):
            part = data.rows(torch.arange(lo, min(lo + batch_size, len(data))))
            acts = [capture(model, s, hook, **kwargs) for s in part.sources]
            pred = _forward(model, hook, part.base, acts, rotation, masks, positions, kwargs).argmax(-1)
            hits += int((pred == part.labels).sum())
    return hits / max(len(data), 1)


@dataclass(frozen=True, kw_only=True)
class DASConfig:
    """How DAS trains."""

    dims: tuple[int, ...] = (1,)
    """Rotated coordinates per aligned variable (boundless: the upper bound is d / n_vars instead)."""
    boundless: bool = False
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-2
    width_penalty: float = 1e-2
    """Boundless only: weight of the mean width (as a fraction of d) in the loss."""
    seed: int = 0
    partial: bool = False
    """Fixed dims only: learn just the ``sum(dims)`` orthonormal columns the swap uses (``[d K]``, Householder)
    instead of a full ``d x d`` rotation; the same interchanges, far cheaper for wide hooks (a 576-wide
    residual: one full-rotation step costs seconds on a CPU). The result is completed to ``[d d]``."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or not self.dims:
            raise ConfigError(f"DASConfig needs epochs, batch_size >= 1, lr > 0 and dims; got {self}")


@dataclass(frozen=True)
class DASResult:
    rotation: Tensor
    masks: Tensor
    """Hard masks used for evaluation [n_vars d]."""
    widths: list[int]
    iia: float
    """IIA on the evaluation data."""
    losses: list[float]


def train_das(model: Any, hook: str, train: InterchangeData, test: InterchangeData, cfg: DASConfig | None = None, *,
              positions: Sequence[int] | None = None, **kwargs: Any) -> DASResult:
    """Learn the rotation (and boundless widths) on ``train``; report IIA on ``test``."""
    cfg = cfg or DASConfig()
    if len(train.sources) != len(cfg.dims) or len(test.sources) != len(cfg.dims):
        raise ConfigError(f"{len(cfg.dims)} subspace dims for {len(train.sources)} intervened variables: give one "
                          f"dims entry per variable")
    d = capture(model, train.base[:1], hook, **kwargs).shape[-1]
    ri = RotatedInterchange(d, cfg.dims, boundless=cfg.boundless, seed=cfg.seed, partial=cfg.partial)
    opt = torch.optim.Adam(ri.parameters(), lr=cfg.lr)
    steps = cfg.epochs * ((len(train) + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    src_acts = [capture(model, s, hook, **kwargs) for s in train.sources]
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    losses: list[float] = []
    gen = torch.Generator().manual_seed(cfg.seed)
    try:
        step = 0
        for _ in range(cfg.epochs):
            for idx in torch.randperm(len(train), generator=gen).split(cfg.batch_size):
                if cfg.boundless:
                    ri.temperature = max(0.05, 1.0 - step / max(steps - 1, 1))
                rot = ri.rotation
                out = _forward(model, hook, train.base[idx], [a[idx] for a in src_acts], rot, ri.masks(),
                               positions, kwargs)
                loss = F.cross_entropy(out, train.labels[idx])
                if cfg.boundless:
                    loss = loss + cfg.width_penalty * (ri.widths() / d).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                step += 1
    finally:
        for p in frozen:
            p.requires_grad_(True)
    with torch.no_grad():
        rot, masks = ri.full_rotation().clone(), ri.masks(hard=True).detach().clone()
    score = iia(model, hook, test, rot, masks, positions=positions, **kwargs)
    return DASResult(rot, masks, [int(m.sum()) for m in masks], score, losses)


def random_rotation(d: int, seed: int = 0) -> Tensor:
    """A Haar-random orthogonal [d d] (the baseline DAS must beat)."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return q * torch.sign(torch.diagonal(r))[None, :]


def intervened_mask(data: InterchangeData) -> Bool[Tensor, "n n_vars"]:
    """Which variables each row actually intervenes on (source differs from base)."""
    return torch.stack([(s != data.base).flatten(1).any(1) for s in data.sources], dim=1)


__all__ = ["DASConfig", "DASResult", "InterchangeData", "RotatedInterchange", "from_counterfactuals", "iia",
           "intervened_mask", "random_rotation", "train_das"]
