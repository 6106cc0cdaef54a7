"""Clean/corrupted prompt pairs for patching: aligned token batches plus the answer and wrong-answer ids.

Patching aligns positions, so a pair must tokenize to the same length and every prompt in a batch too
(sweeps put prompts in the batch dimension without padding). Answers must be single tokens (a metric reads
one logit). ``make_pairs`` checks both and raises errors saying which prompt failed and how.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import ShapeError, TokenError
from mechscope.metrics import LogitDiff


@dataclass(frozen=True, kw_only=True, eq=False)
class PromptPairs:
    """A batch of aligned clean/corrupted prompts with answers."""

    clean: Tensor
    """Clean token ids [batch pos]."""
    corrupted: Tensor
    """Corrupted token ids [batch pos] (same shape)."""
    answer: Tensor
    """Correct next-token ids on the clean prompts [batch]."""
    wrong: Tensor
    """The competing answer (the corrupted prompt's answer) [batch]."""
    pos_labels: list[str] = field(default_factory=list)
    """One label per position for plots (e.g. ``"[S2]"``)."""
    roles: dict[str, Tensor] = field(default_factory=dict)
    """Named positions per prompt, e.g. ``{"IO": [batch], "S1": ..., "end": ...}``."""
    texts: list[str] = field(default_factory=list)
    """The clean prompts as text."""

    def __post_init__(self) -> None:
        if self.clean.shape != self.corrupted.shape:
            raise ShapeError(f"clean {tuple(self.clean.shape)} and corrupted {tuple(self.corrupted.shape)} differ")
        if self.answer.shape != (self.clean.shape[0],) or self.wrong.shape != self.answer.shape:
            raise ShapeError(f"answer/wrong must be [batch={self.clean.shape[0]}], got "
                             f"{tuple(self.answer.shape)} / {tuple(self.wrong.shape)}")

    def metric(self) -> LogitDiff:
        """Logit difference answer - wrong."""
        return LogitDiff(self.answer, self.wrong)

    def subset(self, rows: Sequence[int] | slice) -> PromptPairs:
        """A sub-batch."""
        idx = torch.arange(self.clean.shape[0])[rows]
        return PromptPairs(clean=self.clean[idx], corrupted=self.corrupted[idx], answer=self.answer[idx],
                           wrong=self.wrong[idx], pos_labels=self.pos_labels,
                           roles={k: v[idx] for k, v in self.roles.items()},
                           texts=[self.texts[i] for i in idx.tolist()] if self.texts else [])


def single_token(tokenizer: Any, text: str) -> int:
    """Id of ``text`` if it is one token (``TokenError`` naming the split otherwise)."""
    return int(tokenizer.to_single_token(text))


def make_pairs(tokenizer: Any, clean: Sequence[str], corrupted: Sequence[str], answers: Sequence[str],
               wrongs: Sequence[str], *, prepend_bos: bool | None = None,
               pos_labels: Sequence[str] | None = None) -> PromptPairs:
    """Tokenize and check a batch of pairs (see module docstring)."""
    if not (len(clean) == len(corrupted) == len(answers) == len(wrongs)) or not clean:
        raise ShapeError(f"need equally many (>0) clean, corrupted, answers, wrongs; got {len(clean)}, "
                         f"{len(corrupted)}, {len(answers)}, {len(wrongs)}")
    rows_c = [tokenizer.encode(t, prepend_bos=prepend_bos) for t in clean]
    rows_k = [tokenizer.encode(t, prepend_bos=prepend_bos) for t in corrupted]
    for i, (a, b) in enumerate(zip(rows_c, rows_k)):
        if len(a) != len(b):
            raise ShapeError(f"pair {i}: clean {clean[i]!r} is {len(a)} tokens but corrupted {corrupted[i]!r} is "
                             f"{len(b)}; patching needs aligned positions, so use a same-length corruption")
        if len(a) != len(rows_c[0]):
            raise ShapeError(f"prompt {i} is {len(a)} tokens but prompt 0 is {len(rows_c[0])}: a patching batch "
                             "needs equal lengths (group prompts by length or use one template)")
    ans = torch.tensor([single_token(tokenizer, a) for a in answers])
    wr = torch.tensor([single_token(tokenizer, w) for w in wrongs])
    labels = list(pos_labels) if pos_labels is not None else [
        f"{s}@{i}" for i, s in enumerate(tokenizer.to_str_tokens(torch.tensor(rows_c[0])))]
    return PromptPairs(clean=torch.tensor(rows_c), corrupted=torch.tensor(rows_k), answer=ans, wrong=wr,
                       pos_labels=labels, texts=list(clean))


__all__ = ["PromptPairs", "TokenError", "make_pairs", "single_token"]
