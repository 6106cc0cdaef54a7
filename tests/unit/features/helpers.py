"""Tiny model + tiny dictionary + token data shared by the feature tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mechscope.dictionaries.registry import create, dictionary_class
from mechscope.tokens import Tokenizer
from tests.conftest import tiny_model

HOOK = "blocks.0.hook_resid_post"
ALPHABET = "abcdefghijklmnopqrstuvwxyz <>!-'\"./()"


def model() -> Any:
    """Seeded tiny llama-shaped model with a character tokenizer (its vocab covers the alphabet)."""
    m = tiny_model("llama", d_vocab=len(ALPHABET))
    m.tokenizer = Tokenizer.chars(ALPHABET)
    return m


def dictionary(d_sae: int = 24, k: int = 4, seed: int = 1) -> Any:
    """A seeded TopK SAE on the tiny model's residual stream."""
    cls = dictionary_class("topk")
    d = create(cls.config_class(d_in=32, d_sae=d_sae, k=k, seed=seed, hook_name=HOOK, model_name="tiny"))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in d.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return d.eval()


def tokens(n_seq: int = 24, seq_len: int = 16, seed: int = 0) -> torch.Tensor:
    """Random token sequences ``[n_seq seq_len]``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, len(ALPHABET), (n_seq, seq_len), generator=g)


def save_tiny(tmp: Path) -> tuple[Path, Path]:
    """Save the tiny model and dictionary to disk (for subprocess tests); returns their directories."""
    from mechscope.dictionaries.io import save

    mdir, ddir = tmp / "model", tmp / "dict"
    model().save(mdir)
    save(dictionary(), ddir)
    return mdir, ddir
