"""``planted``: a three-layer model whose circuit is set by hand among distractors with random weights.

Task. A sequence ``[BOS, x1..x6, x_j]`` of distinct tokens ``x_i`` in 0..7 ends with a repeat of ``x_j``
(1 <= j <= 5); the answer is ``(x_{j+1} + x_j) mod 8``, read at the last position.

Residual stream (no norm): ``TOK`` (one-hot token), ``POS`` (one-hot position), ``PREV``, ``IND``, ``ANS``
and ``JUNK`` dimensions. The planted circuit:

* ``a0.h0`` previous-token head: Q/K read ``POS`` (query p scores key p-1), V reads ``TOK``, writes ``PREV``;
* ``a1.h1`` induction head: Q reads ``TOK``, K reads ``PREV`` (K-composition with ``a0.h0``), V reads
  ``TOK``, writes ``IND`` = the token after the earlier occurrence of the current one;
* ``m1``: one ReLU neuron per pair ``(IND = a, TOK = b)`` writes ``ANS = (a + b) mod 8``; the unembedding
  reads ``ANS``.

Every other head (``a0.h1``, ``a0.h2``, ``a1.h0``, ``a1.h2``, ``a2.*``) and MLP (``m0``, ``m2``) is a
distractor: random Q/K/V/in weights on the whole residual stream, output weights into ``JUNK`` only. The
embeddings also write random ``JUNK``. Nothing of the circuit or the unembedding reads ``JUNK``, so the
distractors cannot change the metric: every edge outside ``edges`` has exactly zero effect. ``a0.h0``'s
Q/K reads carry positions only, identical in clean and corrupted runs, so they are not in ``edges`` either.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from mechscope.circuits.truth.base import GroundTruth, LastLogitDiff
from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig, PositionalConfig
from mechscope.models.transformer import HookedTransformer

V, N_POS, BOS = 8, 8, 8
TOK, POS, PREV, IND, ANS = 0, 9, 17, 26, 35
JUNK = (43, 64)
D_MODEL = 64

EDGES = frozenset({
    "input->a0.h0<v>", "a0.h0->a1.h1<k>", "input->a1.h1<q>", "input->a1.h1<v>", "input->m1", "a1.h1->m1",
    "m1->logits",
})
"""The planted circuit's edges."""


def planted_model(*, sharpness: float = 20.0, seed: int = 0) -> HookedTransformer:
    """The model of the module docstring (distractor weights drawn with ``seed``)."""
    cfg = ModelConfig(d_model=D_MODEL, n_layers=3, d_vocab=V + 1, n_ctx=N_POS,
                      attention=AttentionConfig(n_heads=3, d_head=9, scale=1.0),
                      mlp=MLPConfig(d_mlp=V * V, act="relu", bias=True), norm=NormConfig(kind="none"),
                      positional=PositionalConfig(kind="learned"), name="planted", architecture="toy")
    model = HookedTransformer(cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    j0, j1 = JUNK

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) / D_MODEL ** 0.5

    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_E[:, j0:j1] = torch.randn(V + 1, j1 - j0, generator=gen)
        model.W_pos[:, j0:j1] = torch.randn(N_POS, j1 - j0, generator=gen)
        for t in range(V + 1):
            model.W_E[t, TOK + t] = 1.0
        for pos in range(N_POS):
            model.W_pos[pos, POS + pos] = 1.0
        block: Any
        for layer, block in enumerate(model.blocks):  # distractors first, then overwrite the circuit's slots
            a = block.attn
            a.W_Q.copy_(rand(3, D_MODEL, 9) * 4)
            a.W_K.copy_(rand(3, D_MODEL, 9) * 4)
            a.W_V.copy_(rand(3, D_MODEL, 9))
            a.W_O.zero_()
            a.W_O[:, :, j0:j1] = rand(3, 9, j1 - j0)
            if layer != 1:
                block.mlp.W_in.copy_(rand(D_MODEL, V * V))
                block.mlp.b_in.copy_(torch.randn(V * V, generator=gen) * 0.1)
                block.mlp.W_out.zero_()
                block.mlp.W_out[:, j0:j1] = rand(V * V, j1 - j0)
        _previous_token_head(model.blocks[0].attn, 0, sharpness)
        _induction_head(model.blocks[1].attn, 1, sharpness)
        _sum_mlp(model.blocks[1].mlp)
        model.W_U.zero_()
        for c in range(V):
            model.W_U[ANS + c, c] = 1.0
    return model.eval()


def _clear(attn: Any, h: int) -> None:
    for w in (attn.W_Q, attn.W_K, attn.W_V, attn.W_O):
        w[h].zero_()


def _previous_token_head(attn: Any, h: int, sharp: float) -> None:
    _clear(attn, h)
    for p in range(N_POS):
        attn.W_Q[h, POS + p, p] = sharp
        if p + 1 < N_POS:
            attn.W_K[h, POS + p, p + 1] = 1.0
    for t in range(V + 1):
        attn.W_V[h, TOK + t, t] = 1.0
        attn.W_O[h, t, PREV + t] = 1.0


def _induction_head(attn: Any, h: int, sharp: float) -> None:
    _clear(attn, h)
    for t in range(V + 1):
        attn.W_Q[h, TOK + t, t] = sharp
        attn.W_K[h, PREV + t, t] = 1.0
        attn.W_V[h, TOK + t, t] = 1.0
        attn.W_O[h, t, IND + t] = 1.0


def _sum_mlp(mlp: Any) -> None:
    mlp.W_in.zero_()
    mlp.b_in.fill_(-1.0)
    mlp.W_out.zero_()
    for a in range(V):
        for b in range(V):
            n = a * V + b
            mlp.W_in[IND + a, n] = mlp.W_in[TOK + b, n] = 1.0
            mlp.W_out[n, ANS + (a + b) % V] = 1.0


def planted_batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` task sequences [n 8] and their answers [n]."""
    rng = random.Random(seed)
    rows, answers = [], []
    for _ in range(n):
        xs = rng.sample(range(V), 6)
        j = rng.randrange(5)
        rows.append([BOS, *xs, xs[j]])
        answers.append((xs[j + 1] + xs[j]) % V)
    return torch.tensor(rows), torch.tensor(answers)


def planted_truth(*, n_pairs: int = 32, seed: int = 0) -> GroundTruth:
    """The ``planted`` ground truth: clean and corrupted task sequences with different answers."""
    clean, ans = planted_batch(4 * n_pairs, seed)
    corrupted, wrong = planted_batch(4 * n_pairs, seed + 1)
    keep = (ans != wrong).nonzero().flatten()[:n_pairs]
    return GroundTruth(name="planted", model=planted_model(seed=seed), clean=clean[keep], corrupted=corrupted[keep],
                       metric=LastLogitDiff(ans[keep], wrong[keep], name="planted"), edges=EDGES, readout=-1,
                       description="hand-set previous-token head -> induction head -> pair-sum MLP among random "
                                   "distractor heads and MLPs that write only into unread dimensions")


__all__ = ["EDGES", "planted_batch", "planted_model", "planted_truth"]
