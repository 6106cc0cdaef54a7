"""Restricted vocabularies: keep a corpus's most frequent tokens and map the rest to one OOV id.

A 49k-token unembedding dominates a small model's cost on a CPU; the few thousand most frequent BPE tokens
cover most real text (4095 SmolLM2 tokens cover 95.2 % of the stdlib source), so a restricted vocabulary
keeps the statistics that matter at a fraction of the cost. New ids are frequency-ordered (0 = commonest).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mechscope.data.corpus import Corpus, TokenSplit
from mechscope.errors import ConfigError


class VocabView:
    """Decode ids of a restricted vocabulary (see :func:`restrict_vocab`) with the original tokenizer."""

    def __init__(self, tokenizer: Any, kept: np.ndarray) -> None:
        self.tokenizer, self.kept = tokenizer, kept
        self.oov = len(kept)

    def _orig(self, ids: list[int]) -> list[int]:
        return [int(self.kept[i]) for i in ids if i != self.oov]

    def to_string(self, ids: list[int] | torch.Tensor) -> str:
        """Text of restricted ids (the OOV id shows as ``<oov>``)."""
        ids = [int(i) for i in ids]
        return "".join("<oov>" if i == self.oov else self.tokenizer.to_string([int(self.kept[i])]) for i in ids)

    def to_pieces(self, ids: list[int] | torch.Tensor) -> list[str]:
        """Vocabulary spellings of restricted ids."""
        return ["<oov>" if int(i) == self.oov else self.tokenizer.to_pieces([int(self.kept[int(i)])])[0] for i in ids]


def restrict_vocab(corpus: Corpus, size: int) -> tuple[Corpus, np.ndarray]:
    """Keep the ``size − 1`` most frequent training tokens (ids 0.. by frequency) and map the rest to one
    OOV id ``size − 1``; returns the remapped corpus (in memory) and ``kept`` (new id -> original id)."""
    if not 2 <= size <= corpus.d_vocab:
        raise ConfigError(f"vocabulary size must be in [2, {corpus.d_vocab}], got {size}")
    freq = np.zeros(corpus.d_vocab, dtype=np.int64)
    for start in range(0, len(corpus.train), 1 << 22):
        freq += np.bincount(corpus.train.tokens[start:start + (1 << 22)], minlength=corpus.d_vocab)
    freq[corpus.train.separator] = freq.max() + 1  # the separator always survives
    kept = np.argsort(-freq, kind="stable")[:size - 1]
    table = np.full(corpus.d_vocab, size - 1, dtype=np.uint16 if size <= 1 << 16 else np.uint32)
    table[kept] = np.arange(size - 1)
    sep = int(table[corpus.train.separator])

    def remap(s: TokenSplit) -> TokenSplit:
        return TokenSplit(table[np.asarray(s.tokens)], size, sep, s.n_documents)

    return Corpus(remap(corpus.train), remap(corpus.val), size, corpus.root), kept
