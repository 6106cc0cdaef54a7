"""Contrast-consistent search (Burns et al. 2022): an unsupervised direction of "truth" in activations.

Every item is a *contrast pair*: the same statement completed once as true and once as false
(``x⁺``, ``x⁻``: activations [n d] each). Each side is normalised on its own (mean removed, divided by its
std), which removes the "this text ends in True" direction that would otherwise dominate. A probe
``p(x) = σ(w·x + b)`` is trained, without labels, to be

* consistent: ``p(x⁺) ≈ 1 - p(x⁻)``  → ``(p⁺ - (1 - p⁻))²``;
* confident: not both 0.5            → ``min(p⁺, p⁻)²``;

from several random starts at once (one batched tensor ``[restarts d]``), keeping the lowest loss. CCS cannot
know which end of its direction means "true", so its accuracy is reported up to sign (max(acc, 1 - acc)),
as in the paper; the same convention is applied to the random-direction baseline. The supervised baseline is
a logistic regression on ``x⁺ - x⁻`` of the normalised pairs, trained on the training split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechscope.errors import ConfigError, ShapeError


@dataclass(frozen=True, kw_only=True)
class CCSConfig:
    """How CCS is trained."""

    restarts: int = 10
    """Random initialisations trained together; the lowest final loss wins."""
    epochs: int = 1000
    """Full-batch Adam steps."""
    lr: float = 1e-2
    weight_decay: float = 1e-2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.restarts < 1 or self.epochs < 1 or self.lr <= 0:
            raise ConfigError(f"CCSConfig needs restarts >= 1, epochs >= 1, lr > 0; got {self}")


def _pair_check(pos: Tensor, neg: Tensor) -> None:
    if pos.shape != neg.shape or pos.dim() != 2:
        raise ShapeError(f"contrast pairs need x_pos and x_neg of one shape [n d], got {tuple(pos.shape)} "
                         f"and {tuple(neg.shape)}")


def normalize_pairs(pos: Float[Tensor, "n d"], neg: Float[Tensor, "n d"], stats: tuple[Tensor, ...] | None = None
                    ) -> tuple[Float[Tensor, "n d"], Float[Tensor, "n d"], tuple[Tensor, ...]]:
    """Each side minus its mean, divided by its std (``stats`` from the training split, or computed here)."""
    _pair_check(pos, neg)
    if stats is None:
        stats = (pos.mean(0), pos.std(0).clamp_min(1e-6), neg.mean(0), neg.std(0).clamp_min(1e-6))
    mp, sp, mn, sn = stats
    return (pos - mp) / sp, (neg - mn) / sn, stats


@dataclass(frozen=True)
class CCSProbe:
    """A trained CCS probe (on normalised pairs; ``stats`` are the training split's normalisation)."""

    weight: Float[Tensor, " d"]
    bias: float
    stats: tuple[Tensor, ...]
    loss: float

    def credence(self, pos: Float[Tensor, "n d"], neg: Float[Tensor, "n d"]) -> Float[Tensor, " n"]:
        """``0.5 (p(x⁺) + 1 - p(x⁻))``: the probe's belief that each statement is true (up to sign)."""
        zp, zn, _ = normalize_pairs(pos, neg, self.stats)
        pp, pn = torch.sigmoid(zp @ self.weight + self.bias), torch.sigmoid(zn @ self.weight + self.bias)
        return 0.5 * (pp + 1 - pn)

    def accuracy(self, pos: Float[Tensor, "n d"], neg: Float[Tensor, "n d"], labels: Int[Tensor, " n"]) -> float:
        """Accuracy up to sign (CCS cannot tell which end is true)."""
        acc = float(((self.credence(pos, neg) > 0.5).long() == labels).float().mean())
        return max(acc, 1 - acc)


def ccs_loss(pp: Tensor, pn: Tensor) -> Tensor:
    """Consistency + confidence, averaged over items (last axis), one value per restart."""
    return ((pp - (1 - pn)) ** 2).mean(-1) + (torch.minimum(pp, pn) ** 2).mean(-1)


def fit_ccs(pos: Float[Tensor, "n d"], neg: Float[Tensor, "n d"], cfg: CCSConfig | None = None) -> CCSProbe:
    """Train CCS from ``cfg.restarts`` random starts at once and keep the best (lowest loss)."""
    cfg = cfg or CCSConfig()
    zp, zn, stats = normalize_pairs(pos.float(), neg.float())
    d = zp.shape[1]
    g = torch.Generator().manual_seed(cfg.seed)
    w0 = torch.randn(cfg.restarts, d, generator=g)
    w = (w0 / w0.norm(dim=1, keepdim=True) / d**0.5).requires_grad_()
    b = torch.zeros(cfg.restarts, 1, requires_grad=True)
    opt = torch.optim.AdamW([w, b], lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(cfg.epochs):
        opt.zero_grad()
        loss = ccs_loss(torch.sigmoid(w @ zp.T + b), torch.sigmoid(w @ zn.T + b))
        loss.sum().backward()
        opt.step()
    with torch.no_grad():
        final = ccs_loss(torch.sigmoid(w @ zp.T + b), torch.sigmoid(w @ zn.T + b))
        best = int(final.argmin())
    return CCSProbe(w[best].detach().clone(), float(b[best, 0].detach()), stats, float(final[best]))


def random_direction_accuracy(pos: Float[Tensor, "n d"], neg: Float[Tensor, "n d"], labels: Int[Tensor, " n"],
                              seed: int = 0) -> float:
    """Accuracy (up to sign) of a random direction on the normalised pair difference."""
    zp, zn, _ = normalize_pairs(pos.float(), neg.float())
    v = torch.randn(zp.shape[1], generator=torch.Generator().manual_seed(seed))
    acc = float((((zp - zn) @ v > 0).long() == labels).float().mean())
    return max(acc, 1 - acc)


def supervised_accuracy(pos_train: Float[Tensor, "n d"], neg_train: Float[Tensor, "n d"], y_train: Int[Tensor, " n"],
                        pos_test: Float[Tensor, "m d"], neg_test: Float[Tensor, "m d"], y_test: Int[Tensor, " m"]
                        ) -> float:
    """The supervised ceiling: logistic regression on normalised ``x⁺ - x⁻`` (train split), test accuracy."""
    from sklearn.linear_model import LogisticRegression

    zp, zn, stats = normalize_pairs(pos_train.float(), neg_train.float())
    tp, tn, _ = normalize_pairs(pos_test.float(), neg_test.float(), stats)
    clf = LogisticRegression(C=0.1, max_iter=2000).fit((zp - zn).numpy(), y_train.numpy())
    return float((clf.predict((tp - tn).numpy()) == y_test.numpy()).mean())


__all__ = ["CCSConfig", "CCSProbe", "ccs_loss", "fit_ccs", "normalize_pairs", "random_direction_accuracy",
           "supervised_accuracy"]
