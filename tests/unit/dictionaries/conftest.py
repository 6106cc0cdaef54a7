"""Small builders shared by the dictionary tests."""

from __future__ import annotations

import pytest
import torch

from mechscope.dictionaries.base import Dictionary
from mechscope.dictionaries.registry import create, dictionary_class

D_IN, D_SAE = 6, 12

KWARGS = {
    "relu": {"l1_coefficient": 0.5},
    "topk": {"k": 3},
    "batchtopk": {"k": 3},
    "jumprelu": {"l0_coefficient": 0.1, "init_threshold": 0.05},
    "gated": {"l1_coefficient": 0.5},
    "transcoder": {"d_out": 4, "skip": True},
    "crosscoder": {"n_layers": 3},
}


def build(arch: str, **over: object) -> Dictionary:
    """A small seeded dictionary of ``arch`` with non-trivial biases (so formulas test them)."""
    cls = dictionary_class(arch)
    d = create(cls.config_class(d_in=D_IN, d_sae=D_SAE, seed=1, **{**KWARGS[arch], **over}))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in d.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return d


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
