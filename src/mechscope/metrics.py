"""Metrics of a patched run: logit difference, log-probability, probability, KL to clean, cross-entropy.

Every metric reads the logits at the answer position, shaped ``[..., batch, d_vocab]`` (extra leading axes
are sweep variants), and returns one number per prompt ``[..., batch]``; callers average over prompts.

Why log space. The final logits are a *sum* of the contributions of every component (each head, each MLP
and the direct path write additively into the residual stream, and the unembedding is linear). A logit
difference ``logit(answer) - logit(wrong)`` is therefore a sum of per-component terms, so a patch's effect
is additive and comparable across sites, and the softmax normaliser (which depends on every other token)
cancels. Probability is a saturating function of that sum: if three components each add +3 to the answer
logit, patching any one of them moves the probability from, say, 0.999 to 0.98 (invisible), while the
first component on a weak prompt moves it a lot; so the same mechanism looks large or negligible depending
on the others. Log-probability is not saturating on the high side but still mixes in the normaliser; the
logit difference is the cleanest, ``normalise`` then maps it to 0 = corrupted baseline, 1 = clean baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechscope.errors import ShapeError

AnswerLogits = Float[Tensor, "*sweep batch d_vocab"]
"""Logits at the answer position; leading ``sweep`` axes (any number, maybe none) are sweep variants."""
PerPrompt = Float[Tensor, "*sweep batch"]
"""One metric value per prompt (and sweep variant)."""
AnswerIds = Int[Tensor, " batch"]
"""One token id per prompt."""


class Metric(Protocol):
    """A callable from answer-position logits ``[..., batch, d_vocab]`` to per-prompt values ``[..., batch]``."""

    name: str

    def __call__(self, logits: Tensor) -> Tensor: ...


def _gather(logits: AnswerLogits, ids: AnswerIds) -> PerPrompt:
    """logits [..., B, V], ids [B] -> [..., B]."""
    if ids.dim() != 1 or logits.shape[-2] != ids.shape[0]:
        raise ShapeError(f"answer ids must be [batch={logits.shape[-2]}], got shape {tuple(ids.shape)}")
    idx = ids.to(logits.device).view(*([1] * (logits.dim() - 2)), -1, 1).expand(*logits.shape[:-1], 1)
    return logits.gather(-1, idx).squeeze(-1)


def logit_diff(logits: AnswerLogits, answer: AnswerIds, wrong: AnswerIds) -> PerPrompt:
    """``logit[answer] - logit[wrong]`` per prompt: [..., B, V] -> [..., B]."""
    return _gather(logits, answer) - _gather(logits, wrong)


def log_prob(logits: AnswerLogits, answer: AnswerIds) -> PerPrompt:
    """``log softmax(logits)[answer]`` per prompt."""
    return _gather(torch.log_softmax(logits.float(), dim=-1), answer)


def prob(logits: AnswerLogits, answer: AnswerIds) -> PerPrompt:
    """``softmax(logits)[answer]`` per prompt (saturates: prefer ``logit_diff``; see module docstring)."""
    return log_prob(logits, answer).exp()


def cross_entropy(logits: AnswerLogits, answer: AnswerIds) -> PerPrompt:
    """``-log p(answer)`` per prompt."""
    return -log_prob(logits, answer)


def kl_div(logits: AnswerLogits, clean_logits: Float[Tensor, "*clean_sweep batch d_vocab"]) -> PerPrompt:
    """``KL(clean || patched)`` over the vocabulary per prompt; ``clean_logits`` [B, V] broadcasts."""
    if clean_logits.shape[-2:] != logits.shape[-2:]:
        raise ShapeError(f"clean logits {tuple(clean_logits.shape)} do not match logits {tuple(logits.shape)}")
    lp = torch.log_softmax(logits.float(), dim=-1)
    lq = torch.log_softmax(clean_logits.float(), dim=-1)
    return (lq.exp() * (lq - lp)).sum(-1)


def normalise(value: Tensor | float, clean: Tensor | float, corrupted: Tensor | float) -> Tensor:
    """Map a metric to 0 = corrupted baseline, 1 = clean baseline: ``(v - corrupted) / (clean - corrupted)``."""
    v, c, k = (torch.as_tensor(x, dtype=torch.float32) for x in (value, clean, corrupted))
    denom = c - k
    if bool((denom.abs() < 1e-12).any()):
        raise ValueError("clean and corrupted baselines are equal: the normalised metric is undefined; "
                         "check that the corruption changes the answer")
    return (v - k) / denom


@dataclass(frozen=True, eq=False)
class LogitDiff:
    """Logit difference between the right and the wrong answer token ([B] ids each)."""

    answer: Tensor
    """Correct answer token ids [batch]."""
    wrong: Tensor
    """Wrong (counterfactual) answer token ids [batch]."""
    name: str = "logit_diff"
    """Label used in results."""

    def __call__(self, logits: Tensor) -> Tensor:
        return logit_diff(logits, self.answer, self.wrong)


@dataclass(frozen=True, eq=False)
class LogProb:
    """Log-probability of the answer token."""

    answer: Tensor
    """Answer token ids [batch]."""
    name: str = "log_prob"
    """Label used in results."""

    def __call__(self, logits: Tensor) -> Tensor:
        return log_prob(logits, self.answer)


@dataclass(frozen=True, eq=False)
class Prob:
    """Probability of the answer token."""

    answer: Tensor
    """Answer token ids [batch]."""
    name: str = "prob"
    """Label used in results."""

    def __call__(self, logits: Tensor) -> Tensor:
        return prob(logits, self.answer)


@dataclass(frozen=True, eq=False)
class CrossEntropy:
    """Cross-entropy of the answer token (negative log-probability)."""

    answer: Tensor
    """Answer token ids [batch]."""
    name: str = "cross_entropy"
    """Label used in results."""

    def __call__(self, logits: Tensor) -> Tensor:
        return cross_entropy(logits, self.answer)


@dataclass(frozen=True, eq=False)
class KLToClean:
    """KL divergence from the clean run's answer-position distribution to the patched one."""

    clean_logits: Tensor
    """Clean logits at the answer position [batch d_vocab]."""
    name: str = "kl_to_clean"
    """Label used in results."""

    def __call__(self, logits: Tensor) -> Tensor:
        return kl_div(logits, self.clean_logits)


__all__ = ["CrossEntropy", "KLToClean", "LogProb", "LogitDiff", "Metric", "Prob", "cross_entropy", "kl_div",
           "log_prob", "logit_diff", "normalise", "prob"]
