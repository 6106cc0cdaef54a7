"""Tiny circuit problems for the tests: random pairs, a logit-difference metric, a model made linear."""

from __future__ import annotations

import torch

from tests.conftest import tiny_model


def pair(seed: int = 0, b: int = 3, p: int = 6, vocab: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Random clean / corrupted token batches of one shape."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, p), generator=g), torch.randint(0, vocab, (b, p), generator=g)


def logit_diff_metric(a: int = 3, b: int = 7):
    """logit[a] - logit[b] at the last position, per example."""
    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, a] - logits[:, -1, b]
    return metric


def linear_model(seed: int = 0):
    """Attention-only, no norms, W_Q = W_K = 0: every pattern is uniform-causal whatever the input, so the
    logits are linear in every receiver's input and hence in every edge mask."""
    model = tiny_model("attn_only", seed=seed)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_Q.zero_()
            block.attn.W_K.zero_()
    return model
