"""Reading circuits straight from the weights (Elhage et al. 2021, "A Mathematical Framework for Transformer
Circuits").

With no MLPs and no normalisation, an attention-only transformer's logits are a sum of *paths*:

* the **direct path** ``W_E W_U``: a zero-layer model is exactly a bigram table ``logits[a, b]``;
* per head, the **QK circuit** ``W_E W_Q W_Kᵀ W_Eᵀ`` [query token, key token]: how much a token wants to
  attend to another, and the **OV circuit** ``W_E W_V W_O W_U`` [source token, output token]: what attending
  to a token does to the logits. A one-layer model is a table of *skip-trigrams* "A … B → C": at a query
  token B, attend back to an earlier A (QK[B, A] high) and raise C (OV[A, C] high);
* a **copying** head's OV circuit has mostly positive eigenvalues (it raises the logit of what it attends to);
* in two layers, heads *compose*: a layer-0 head's output can feed a layer-1 head's query (Q-composition),
  key (K-composition) or value (V-composition). The composition score ``‖W_A W_B‖_F / (‖W_A‖_F ‖W_B‖_F)``
  measures how much of head B's input space reads A's output space; a random-matrix baseline says what
  "no composition" looks like. An induction head K-composes with a previous-token head.

Every per-head quantity is computed for all heads at once. Composition and copying scores never form a
``d_model × d_model`` (or vocab × vocab) matrix per head: they use the low-rank factors (``d_head``-sized
Gram matrices), so they run on a 30-layer model too. Norm weights (``ln1.w``) are folded into the
Q/K/V matrices when present; rotary positions are ignored (QK is then the content-only part).
Q/K norms (``attention.qk_norm``: Qwen3, Gemma 3) fold into W_Q's / W_K's output columns and the attention
post-norm (``norm.post_sublayer``: Gemma 2/3, ``ln1_post``) into W_O, so every circuit below is the model's up to
the norms' positive ``1/rms`` scales (per position), which weights alone cannot know.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from mechscope.errors import ConfigError
from mechscope.models.components.frozen_norm import frozen_norm
from mechscope.models.factored import FactoredMatrix

# ----- direct path: bigrams ----------------------------------------------------------------------------


def bigram_logits(model: Any) -> Float[Tensor, "d_vocab d_vocab_out"]:
    """The direct path ``W_E W_U (+ b_U)``: for a zero-layer model, the logits of token b after token a."""
    w = model.W_E @ model.W_U
    b_u = getattr(model.unembed, "b_U", None)
    return (w + b_u if b_u is not None else w).detach()


def empirical_bigram_logprobs(counts: np.ndarray | Tensor, smoothing: float = 0.1) -> Float[Tensor, "v v"]:
    """log P(b | a) from pair counts [a b], additively smoothed so unseen pairs stay finite."""
    c = torch.as_tensor(np.asarray(counts), dtype=torch.float64) + smoothing
    return (c / c.sum(-1, keepdim=True)).log()


def bigram_correlation(model_logits: Tensor, counts: np.ndarray | Tensor, min_count: int = 10) -> float:
    """Pearson r between the model's log P(b|a) and the corpus's, over pairs seen ≥ ``min_count`` times.

    Restricting to seen pairs compares the two where the empirical estimate is reliable (rare pairs'
    log-probabilities are dominated by the smoothing constant, not by the corpus).
    """
    c = torch.as_tensor(np.asarray(counts))
    if c.shape != model_logits.shape:
        raise ConfigError(f"counts {tuple(c.shape)} and model bigram logits {tuple(model_logits.shape)} differ")
    keep = c >= min_count
    if int(keep.sum()) < 3:
        raise ConfigError(f"fewer than 3 bigrams were seen >= {min_count} times; lower min_count")
    x = torch.log_softmax(model_logits.double(), -1)[keep]
    y = empirical_bigram_logprobs(c)[keep]
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x.norm() * y.norm()))


# ----- per-head circuits --------------------------------------------------------------------------------


def _fold_ln(model: Any, layer: int, w: Tensor) -> Tensor:
    """Multiply the input rows of W_Q/W_K/W_V [heads d_model d_head] by ``ln1.w`` (if the block has one)."""
    ln_w = getattr(model.blocks[layer].ln1, "w", None)
    return w * ln_w.detach()[None, :, None] if ln_w is not None else w


def _fold_head_norm(model: Any, layer: int, name: str, w: Tensor) -> Tensor:
    """W_Q / W_K [heads d_model d_head] times ``attn.q_norm.w`` / ``attn.k_norm.w`` on the output (d_head) columns
    (``attention.qk_norm``); unchanged without Q/K norms and for W_V."""
    norm = {"W_Q": "q_norm", "W_K": "k_norm"}.get(name)
    qk_norm = getattr(model.blocks[layer].attn, norm, None) if norm is not None else None
    return frozen_norm(qk_norm, w, w.new_ones(())) if qk_norm is not None else w


def _fold_post(model: Any, layer: int, w_o: Tensor) -> Tensor:
    """W_O [heads d_head d_model] through ``ln1_post`` at unit scale (``norm.post_sublayer``): times its weight
    (centred over d_model first if it is a LayerNorm), i.e. each head's share of the post-norm's output."""
    if not model.cfg.norm.post_sublayer:
        return w_o
    return frozen_norm(model.blocks[layer].ln1_post, w_o, w_o.new_ones(()))


def head_weights(model: Any) -> dict[str, Tensor]:
    """Stacked per-head weights [n_layers n_heads ...] with the norms folded and GQA heads expanded.

    ``ln1.w`` multiplies the input rows of W_Q/W_K/W_V. With ``attention.qk_norm`` (q' = q / rms(q) ⊙ w_q, same
    for k), ``w_q`` / ``w_k`` multiply W_Q's / W_K's output columns: q'·k' = (q ⊙ w_q)·(k ⊙ w_k) / (rms(q) rms(k)).
    With ``norm.post_sublayer``, W_O passes through ``ln1_post`` at unit scale (times ``w_post``). The QK and
    OV circuits built from these are then exact up to the norms' positive per-position scales (``1/rms``: the
    query's and key's for QK, the attention sublayer output's for OV), which weights alone cannot know: a
    score's sign is exact, the ordering over keys only where their scales are equal. Scale-free scores
    (composition, copying) do not depend on those scales. Models without these norms get the plain weights.
    """
    rep = model.cfg.n_heads // model.cfg.attention.kv_heads
    layers = range(model.cfg.n_layers)
    out: dict[str, Tensor] = {}
    for name in ("W_Q", "W_K", "W_V"):
        w = getattr(model, name).detach()
        if rep > 1 and name != "W_Q":
            w = w.repeat_interleave(rep, dim=1)
        out[name] = torch.stack([_fold_head_norm(model, layer, name, _fold_ln(model, layer, w[layer]))
                                 for layer in layers])
    w_o = model.W_O.detach()
    out["W_O"] = torch.stack([_fold_post(model, layer, w_o[layer]) for layer in layers])
    return out


def qk_circuit(model: Any, layer: int) -> FactoredMatrix:
    """Token-token QK circuit ``scale · W_E W_Q W_Kᵀ W_Eᵀ`` per head [n_heads query_tok key_tok] (factored).

    Entry [h, b, a]: head h's attention logit from query token b to key token a (positions ignored).
    ``.AB`` materialises it (fine for small vocabularies). Norm weights are folded (:func:`head_weights`): with
    Q/K norms the logit is exact up to the positive factor 1/(rms(q) rms(k)) of each query/key pair.
    """
    w = head_weights(model)
    we = model.W_E.detach()
    q = torch.einsum("vd,hde->hve", we, w["W_Q"][layer]) * model.cfg.attention.attn_scale
    k = torch.einsum("vd,hde->hve", we, w["W_K"][layer])
    return FactoredMatrix(q, k.transpose(-1, -2))


def ov_circuit(model: Any, layer: int) -> FactoredMatrix:
    """OV circuit ``W_E W_V W_O W_U`` per head [n_heads src_tok out_tok] (factored, inner dim d_head).

    Entry [h, a, c]: the change of token c's logit per unit of head h's attention on token a. Norm weights are
    folded (:func:`head_weights`): with an attention post-norm it is exact up to that norm's positive 1/rms
    scale at the query position.
    """
    w = head_weights(model)
    v = torch.einsum("vd,hde->hve", model.W_E.detach(), w["W_V"][layer])
    return FactoredMatrix(v, w["W_O"][layer] @ model.W_U.detach())


class CopyingScores(NamedTuple):
    """Eigenvalue statistics of each head's OV circuit ``W_E W_V W_O W_U`` (a copying head is positive)."""

    eig_ratio: Float[Tensor, "n_layers n_heads"]
    """Σ Re λ / Σ |λ| in [-1, 1] (Elhage et al.'s copying score)."""
    positive_fraction: Float[Tensor, "n_layers n_heads"]
    """|λ|-weighted fraction of eigenvalues with positive real part, in [0, 1]."""


def copying_scores(model: Any) -> CopyingScores:
    """Copying scores of every head, from eigenvalues of ``W_O W_U W_E W_V`` [d_head d_head].

    The nonzero eigenvalues of AB equal those of BA, so the small d_head-square product gives the spectrum
    of the vocab-square OV circuit. Needs ``d_vocab == d_vocab_out`` (the same token in and out).
    """
    if model.cfg.d_vocab != model.cfg.vocab_out:
        raise ConfigError("copying scores need the same input and output vocabulary (d_vocab == d_vocab_out)")
    w = head_weights(model)
    ov = FactoredMatrix((model.W_E.detach() @ w["W_V"]).double(), (w["W_O"] @ model.W_U.detach()).double())
    lam = ov.eigenvalues  # [l h d_head]: the nonzero spectrum of the vocab-square circuit
    mag = lam.abs().sum(-1).clamp_min(1e-30)
    pos = (lam.abs() * (lam.real > 0)).sum(-1)
    return CopyingScores((lam.real.sum(-1) / mag).float(), (pos / mag).float())


# ----- skip-trigrams ---------------------------------------------------------------------------------------


class SkipTrigram(NamedTuple):
    """"A … B → C": at query token B, head ``head`` attends to an earlier A and raises C."""

    head: int
    """Head index (layer 0)."""
    a: int
    """Source (attended) token."""
    b: int
    """Query (current) token."""
    c: int
    """Boosted output token."""
    score: float
    """Weights-only strength: attention B→A (softmax over the vocabulary) × centred OV[A, C]."""
    ov: float
    """Centred OV logit boost of C from A."""


def skip_trigrams(model: Any, k: int = 20, layer: int = 0, exclude: tuple[int, ...] = (),
                  candidates: Tensor | None = None, per_source: int | None = None) -> list[SkipTrigram]:
    """The ``k`` strongest skip-trigrams of one layer, read from the QK and OV circuits alone.

    For each head, source A and query B: attention proxy = softmax over keys of QK[B, ·] (a context holding
    every candidate token once), C = argmax of the OV row of A centred over outputs; score = proxy × OV
    boost. ``exclude`` drops tokens (e.g. a document separator) from A, B and C. ``candidates`` (token ids)
    restricts A, B and C to a subset, which keeps memory at n_heads × len(candidates)² for big vocabularies.
    ``per_source`` keeps at most that many B per (head, A): one strong source otherwise fills the whole list
    with the same "A … → C" and only B varying.
    """
    cand = torch.arange(model.cfg.d_vocab) if candidates is None else torch.as_tensor(candidates).long()
    qk_f, ov_f = qk_circuit(model, layer), ov_circuit(model, layer)
    qk = qk_f.A[:, cand] @ qk_f.B[:, :, cand]  # [h B A] over candidates
    ov = ov_f.A[:, cand] @ ov_f.B[:, :, cand]  # [h A C]
    ov = ov - ov.mean(-1, keepdim=True)
    ex = torch.isin(cand, torch.tensor(exclude, dtype=torch.long))
    qk[:, :, ex] = float("-inf")
    ov[:, :, ex] = float("-inf")
    attn = torch.softmax(qk, dim=-1)
    best_ov, best_c = ov.max(-1)  # [h A]
    score = attn * best_ov[:, None, :]
    score[:, ex, :] = float("-inf")
    score[:, :, ex] = float("-inf")
    n_tok = score.shape[1]
    if per_source is not None:
        if per_source < 1:
            raise ValueError(f"skip_trigrams: per_source must be >= 1 or None, got {per_source}")
        best, best_b = score.topk(min(per_source, n_tok), dim=1)  # [h per_source A]: the strongest B per (h, A)
        top = torch.topk(best.flatten(), min(k, best.numel()))
        per = best.shape[1]
        heads, rest = top.indices // (per * n_tok), top.indices % (per * n_tok)
        as_ = rest % n_tok
        bs = best_b.flatten()[top.indices]
    else:
        top = torch.topk(score.flatten(), k)
        heads, rest = top.indices // (n_tok * n_tok), top.indices % (n_tok * n_tok)
        bs, as_ = rest // n_tok, rest % n_tok
    return [SkipTrigram(int(h), int(cand[a]), int(cand[b]), int(cand[best_c[h, a]]), float(s), float(best_ov[h, a]))
            for h, a, b, s in zip(heads, as_, bs, top.values)]


@torch.inference_mode()
def verify_skip_trigrams(model: Any, trigrams: list[SkipTrigram], filler: int, length: int = 16) -> Tensor:
    """Measured effect of A on C's logit at B for each trigram [len(trigrams)], by running the model.

    Context: ``length`` tokens of ``filler`` with A in the middle and B last; control: the same with A
    replaced by ``filler``. Effect = logit_C(with A) − logit_C(control), minus the same change of the mean
    logit (so a uniform shift does not count). All trigrams run in one batch.
    """
    if not trigrams:
        return torch.zeros(0)
    n = len(trigrams)
    ctx = torch.full((2 * n, length), filler, dtype=torch.long)
    a = torch.tensor([t.a for t in trigrams])
    ctx[:n, length // 2] = a
    ctx[:, -1] = torch.tensor([t.b for t in trigrams]).repeat(2)
    logits = model(ctx)[:, -1].float()
    logits = logits - logits.mean(-1, keepdim=True)
    c = torch.tensor([t.c for t in trigrams]).repeat(2)
    lc = logits[torch.arange(2 * n), c]
    return lc[:n] - lc[n:]


# ----- composition ------------------------------------------------------------------------------------------


class CompositionScores(NamedTuple):
    """Q/K/V composition of every (earlier head A, later head B) pair, indexed [layer_A head_A layer_B head_B].

    Pairs with ``layer_A >= layer_B`` are NaN (a head can only compose with earlier layers).
    """

    q: Float[Tensor, "n_layers n_heads n_layers n_heads"]
    """‖W_OV^A W_QK^B‖_F / (‖W_OV^A‖_F ‖W_QK^B‖_F): A's output feeds B's queries."""
    k: Float[Tensor, "n_layers n_heads n_layers n_heads"]
    """‖W_OV^A (W_QK^B)ᵀ‖ / (...): A's output feeds B's keys."""
    v: Float[Tensor, "n_layers n_heads n_layers n_heads"]
    """‖W_OV^A W_OV^B‖ / (...): A's output feeds B's values."""
    baseline: float
    """Mean score of random Gaussian matrices with the same shapes (what "no composition" gives)."""


def _fro2_factored(left: Tensor, right: Tensor) -> Tensor:
    """‖L R‖_F² for stacks L [... d e], R [... e d] via Gram matrices (never forms L R)."""
    return ((left.transpose(-1, -2) @ left) * (right @ right.transpose(-1, -2))).sum((-1, -2))


def _pair_scores(l1: Tensor, r1: Tensor, l2: Tensor, r2: Tensor, chunk: int = 16) -> Tensor:
    """Composition scores [nA nB] of products (L1 R1)(L2 R2), with L [n d e], R [n e d].

    ‖L1 R1 L2 R2‖² = Σ (G1 M G2) ∘ M with G1 = L1ᵀL1, M = R1 L2, G2 = R2 R2ᵀ (all d_head-sized).
    Chunked over A so memory stays at ``chunk × nB × d_head²``.
    """
    g1 = l1.transpose(-1, -2) @ l1  # [nA e e]
    g2 = r2 @ r2.transpose(-1, -2)  # [nB e e]
    rows = []
    for s in range(0, l1.shape[0], chunk):
        m = torch.einsum("aed,bdf->abef", r1[s:s + chunk], l2)  # [a b e e]
        prod = torch.einsum("aef,abfg,bgh->abeh", g1[s:s + chunk], m, g2)
        rows.append((prod * m).sum((-1, -2)))
    num = torch.cat(rows).clamp_min(0).sqrt()
    den = _fro2_factored(l1, r1).sqrt()[:, None] * _fro2_factored(l2, r2).sqrt()[None, :]
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))  # a zero head composes with nothing


def _factors(w: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
    """Left/right factors [n d e], [n e d] of each head's OV, QK and QKᵀ matrices (heads flattened)."""
    flat = {k: v.flatten(0, 1).double() for k, v in w.items()}
    return {"ov": (flat["W_V"], flat["W_O"]),
            "qk": (flat["W_Q"], flat["W_K"].transpose(-1, -2)),
            "qk_t": (flat["W_K"], flat["W_Q"].transpose(-1, -2))}


def composition_baseline(d_model: int, d_head: int, n_samples: int = 64, seed: int = 0) -> float:
    """Mean composition score of Gaussian W_V, W_O, W_Q, W_K of the given shapes (scale-free)."""
    gen = torch.Generator().manual_seed(seed)

    def g(*shape: int) -> Tensor:
        return torch.randn(n_samples, *shape, generator=gen, dtype=torch.float64)

    s = _pair_scores(g(d_model, d_head), g(d_head, d_model), g(d_model, d_head), g(d_head, d_model))
    return float(s.diagonal().mean())


def composition_scores(model: Any, baseline_samples: int = 64) -> CompositionScores:
    """Q/K/V composition scores of all head pairs of ``model`` (see :class:`CompositionScores`)."""
    n_l, n_h = model.cfg.n_layers, model.cfg.n_heads
    f = _factors(head_weights(model))
    l1, r1 = f["ov"]
    layer = torch.arange(n_l).repeat_interleave(n_h)
    invalid = layer[:, None] >= layer[None, :]
    out = {}
    for kind, key in (("q", "qk"), ("k", "qk_t"), ("v", "ov")):
        s = _pair_scores(l1, r1, *f[key]).float()
        out[kind] = s.masked_fill(invalid, float("nan")).reshape(n_l, n_h, n_l, n_h)
    base = composition_baseline(model.cfg.d_model, model.cfg.d_head, baseline_samples)
    return CompositionScores(out["q"], out["k"], out["v"], base)


def top_pairs(scores: Tensor, k: int = 10) -> list[tuple[int, int, int, int, float]]:
    """The ``k`` highest finite entries of a [l h l h] score tensor as (layer_A, head_A, layer_B, head_B, score)."""
    flat = torch.nan_to_num(scores, nan=float("-inf")).flatten()
    top = torch.topk(flat, min(k, int(torch.isfinite(flat).sum())))
    idx = np.unravel_index(top.indices.numpy(), tuple(scores.shape))
    return [(int(a), int(b), int(c), int(d), float(s)) for a, b, c, d, s in zip(*idx, top.values)]
