"""Fourier analysis of modular-addition transformers (Nanda et al. 2023).

A function on Z_p is a vector in R^p; the **Fourier basis** of Z_p is the orthonormal basis
``1/sqrt(p)``, ``sqrt(2/p) cos(w_k x)``, ``sqrt(2/p) sin(w_k x)`` with ``w_k = 2πk/p`` for
``k = 1..(p-1)//2`` (plus ``(-1)^x/sqrt(p)`` at ``k = p/2`` when p is even). A model that has grokked
modular addition embeds each number on a few circles (its **key frequencies**), multiplies them in the
MLP into terms ``cos(w_k(a+b))``, ``sin(w_k(a+b))`` and reads the answer as
``logit(c) ≈ Σ_k α_k cos(w_k(a + b − c))``, which peaks at ``c = (a+b) mod p``.

This module measures that, generic over p and vectorised (no loops over pairs or neurons):
- ``embedding_freq_norms`` / ``key_frequencies``: which frequencies the embedding uses;
- ``neuron_freq_fractions``: the share of each neuron's activation variance over (a, b) explained by the
  terms of each single frequency;
- ``logit_trig_fit``: how much of the logits ``cos(w_k(a+b−c))`` terms explain;
- ``progress_measures``: restricted loss (MLP activations projected onto the key ``(a+b)`` directions),
  excluded loss (those directions removed from the logits, on the training pairs), the logit fit, and
  the test loss after removing every non-key frequency from the neuron activations.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mechscope.errors import ConfigError, ShapeError


class FourierBasis(NamedTuple):
    """The orthonormal Fourier basis of Z_p."""

    basis: Tensor
    """[p p] float64; row i is basis vector i evaluated at x = 0..p-1."""
    freqs: Tensor
    """[p] int64 frequency of each row (0 for the constant)."""
    names: list[str]
    """Row labels: ``const``, ``cos 1``, ``sin 1``, ..."""


def fourier_basis(p: int) -> FourierBasis:
    """The orthonormal Fourier basis of Z_p (rows ordered const, cos 1, sin 1, cos 2, sin 2, ...)."""
    if p < 2:
        raise ConfigError(f"p must be >= 2, got {p}")
    x = torch.arange(p, dtype=torch.float64)
    k = torch.arange(1, (p - 1) // 2 + 1, dtype=torch.float64)
    ang = 2 * math.pi * k[:, None] * x[None, :] / p
    trig = torch.stack([torch.cos(ang), torch.sin(ang)], dim=1).reshape(-1, p) * math.sqrt(2 / p)
    rows = [torch.full((1, p), 1 / math.sqrt(p), dtype=torch.float64), trig]
    freqs = [torch.zeros(1, dtype=torch.long), torch.arange(1, len(k) + 1).repeat_interleave(2)]
    names = ["const"] + [f"{t} {int(i)}" for i in k for t in ("cos", "sin")]
    if p % 2 == 0:
        rows.append(torch.cos(math.pi * x)[None] / math.sqrt(p))
        freqs.append(torch.tensor([p // 2]))
        names.append(f"cos {p // 2}")
    return FourierBasis(torch.cat(rows), torch.cat(freqs), names)


def n_freqs(p: int) -> int:
    """Number of non-constant frequencies of Z_p (``p // 2``)."""
    return p // 2


def _per_freq(energy: Tensor, freqs: Tensor, p: int) -> Tensor:
    """Sum ``energy`` [p ...] over basis rows of the same frequency → [p//2 + 1 ...]."""
    out = torch.zeros((n_freqs(p) + 1, *energy.shape[1:]), dtype=energy.dtype)
    return out.index_add_(0, freqs, energy)


def embedding_freq_norms(W_E: Tensor) -> Tensor:
    """Squared norm of the embedding per frequency: [p//2 + 1], index 0 = constant, k = frequency k.

    Args:
        W_E: [p d_model] the embeddings of the numbers 0..p-1 (drop the ``=`` row first).
    """
    if W_E.dim() != 2:
        raise ShapeError(f"W_E: expected [p d_model], got {tuple(W_E.shape)}")
    p = W_E.shape[0]
    fb = fourier_basis(p)
    coeffs = fb.basis @ W_E.detach().to(torch.float64)
    return _per_freq(coeffs.pow(2).sum(-1), fb.freqs, p)


def key_frequencies(freq_energy: Tensor, max_keys: int = 8) -> list[int]:
    """The frequencies standing above the rest: the top ones before the largest drop of the sorted energies.

    Args:
        freq_energy: [p//2 + 1] as from ``embedding_freq_norms`` (index 0, the constant, is ignored).
        max_keys: at most this many frequencies are returned.
    Returns: sorted frequency numbers (1-based).
    The split is the largest ratio between consecutive sorted energies among the top ``max_keys + 1``.
    """
    e = freq_energy[1:].to(torch.float64).clamp_min(1e-30)
    if e.numel() < 2:
        return [1] if e.numel() == 1 else []
    vals, order = e.sort(descending=True)
    m = min(max_keys, e.numel() - 1)
    gaps = vals[:m].log() - vals[1:m + 1].log()
    n_key = int(gaps.argmax()) + 1
    return sorted(int(i) + 1 for i in order[:n_key])


def key_fraction(freq_energy: Tensor, keys: list[int]) -> float:
    """Share of the non-constant energy carried by ``keys``."""
    nonconst = freq_energy[1:].sum()
    return float(freq_energy[keys].sum() / nonconst) if keys else 0.0


def neuron_freq_fractions(acts: Tensor) -> Tensor:
    """[n_neurons p//2 + 1]: share of each neuron's variance over (a, b) explained by one frequency k.

    Frequency k's terms are the 2-D Fourier components (k, 0), (0, k) and (k, k) — i.e. cos/sin(w_k a),
    cos/sin(w_k b) and their products, which hold cos(w_k(a+b)) and sin(w_k(a+b)). Column 0 is unused (0).

    Args:
        acts: [p p n_neurons] activations at input (a, b).
    """
    if acts.dim() != 3 or acts.shape[0] != acts.shape[1]:
        raise ShapeError(f"acts: expected [p p n_neurons], got {tuple(acts.shape)}")
    p = acts.shape[0]
    fb = fourier_basis(p)
    a = acts.detach().to(torch.float64)
    a = a - a.mean(dim=(0, 1), keepdim=True)
    coeffs = torch.einsum("ia,abn,jb->ijn", fb.basis, a, fb.basis)
    energy = coeffs.pow(2)
    total = energy.sum(dim=(0, 1)).clamp_min(1e-30)
    fa, fbq = fb.freqs[:, None], fb.freqs[None, :]
    k = torch.arange(n_freqs(p) + 1)[:, None, None]
    masks = ((fa == k) & ((fbq == 0) | (fbq == k))) | ((fa == 0) & (fbq == k))
    masks[0] = False
    return torch.einsum("ijn,kij->nk", energy, masks.to(energy.dtype)) / total[:, None]


def logit_trig_fit(logits: Tensor, keys: list[int]) -> tuple[Tensor, float]:
    """Least-squares fit of logits by ``Σ_k α_k cos(w_k(a + b − c))`` over the key frequencies.

    Args:
        logits: [p p p_out] logits at input (a, b) for output c (centred over c inside: softmax ignores it).
    Returns: (α [len(keys)], fraction of the centred logits' squared norm explained). The cosine between
    logits and the fitted prediction is the square root of that fraction.
    """
    if logits.dim() != 3 or not logits.shape[0] == logits.shape[1] == logits.shape[2]:
        raise ShapeError(f"logits: expected [p p p], got {tuple(logits.shape)}")
    p = logits.shape[0]
    lg = logits.detach().to(torch.float64)
    lg = lg - lg.mean(-1, keepdim=True)
    r = torch.arange(p)
    d = (r[:, None, None] + r[None, :, None] - r[None, None, :]) % p
    by_d = torch.zeros(p, dtype=torch.float64).index_add_(0, d.flatten(), lg.flatten())  # Σ logits per (a+b−c)
    w = 2 * math.pi * torch.tensor(keys, dtype=torch.float64)[:, None] * torch.arange(p)[None] / p
    cos = torch.cos(w)  # [keys p]
    norm2 = p**2 * cos.pow(2).sum(-1)  # ||cos(w_k(a+b−c))||² over the p³ grid
    alpha = (cos @ by_d) / norm2
    explained = float((alpha.pow(2) * norm2).sum() / lg.pow(2).sum().clamp_min(1e-30))
    return alpha, explained


def sum_directions(p: int, keys: list[int]) -> Tensor:
    """[p² 2·len(keys)] orthonormal columns cos(w_k(a+b)), sin(w_k(a+b)) over pairs in order a·p+b."""
    r = torch.arange(p, dtype=torch.float64)
    s = (r[:, None] + r[None, :]).reshape(-1)
    w = 2 * math.pi * torch.tensor(keys, dtype=torch.float64) / p
    cols = torch.cat([torch.cos(s[:, None] * w), torch.sin(s[:, None] * w)], dim=1)
    return cols / cols.norm(dim=0, keepdim=True)


def keep_freqs_2d(acts: Tensor, keys: list[int]) -> Tensor:
    """``acts`` [p p n] with every 2-D Fourier component whose a- or b-frequency is not in {0} ∪ keys removed."""
    p = acts.shape[0]
    fb = fourier_basis(p)
    basis = fb.basis.to(acts.dtype)
    keep = (fb.freqs == 0) | torch.isin(fb.freqs, torch.tensor(keys, dtype=torch.long))
    kb = basis[keep]  # rows kept
    coeffs = torch.einsum("ia,abn,jb->ijn", kb, acts, kb)
    return torch.einsum("ia,ijn,jb->abn", kb, coeffs, kb)


def _run_final(model: Any, tokens: Tensor, acts: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(logits at '=' [n p_out] float64, MLP activations at '=' [n d_mlp]); ``acts`` replaces the latter."""
    name = "blocks.0.mlp.hook_post"
    seen: dict[str, Tensor] = {}

    def hook(x: Tensor, hook: Any) -> Tensor:
        if acts is not None:
            x = x.clone()
            x[:, -1] = acts.to(x.dtype)
        seen["post"] = x[:, -1]
        return x

    with torch.inference_mode():
        logits = model.run_with_hooks(tokens, fwd=[(name, hook)])
    return logits[:, -1].to(torch.float64), seen["post"]


def progress_measures(model: Any, data: Any, keys: list[int], *, ablate_nonkey: bool = True) -> dict[str, float]:
    """Nanda et al.'s progress measures for a 1-layer modular-addition model on ``data`` (a ``ModularData``).

    Returns train/test loss and accuracy; ``restricted_loss`` (neuron activations at ``=`` replaced by
    their mean plus their projection on cos/sin(w_k(a+b)) for the key frequencies, loss over all pairs);
    ``excluded_loss`` (those directions removed from the logits, loss on the training pairs);
    ``logit_trig_cosine`` (cosine of centred logits with their best cos(w_k(a+b−c)) fit); and, if
    ``ablate_nonkey``, ``ablated_nonkey_test_loss`` (non-key 2-D frequencies removed from the activations).
    """
    p = data.p
    logits, post = _run_final(model, data.tokens)
    y = data.labels
    tr, te = data.train_idx, data.test_idx
    out = {"train_loss": float(F.cross_entropy(logits[tr], y[tr])), "test_loss": float(F.cross_entropy(logits[te], y[te])),
           "train_acc": float((logits[tr].argmax(-1) == y[tr]).double().mean()),
           "test_acc": float((logits[te].argmax(-1) == y[te]).double().mean())}
    U = sum_directions(p, keys)
    post64 = post.to(torch.float64)
    mean = post64.mean(0, keepdim=True)
    restricted = mean + U @ (U.T @ (post64 - mean))
    r_logits, _ = _run_final(model, data.tokens, restricted)
    out["restricted_loss"] = float(F.cross_entropy(r_logits, y))
    excl = logits - U @ (U.T @ logits)
    out["excluded_loss"] = float(F.cross_entropy(excl[tr], y[tr]))
    _, frac = logit_trig_fit(logits.reshape(p, p, -1), keys)
    out["logit_trig_cosine"] = math.sqrt(frac)
    if ablate_nonkey:
        kept = keep_freqs_2d(post64.reshape(p, p, -1), keys).reshape(p * p, -1)
        a_logits, _ = _run_final(model, data.tokens, kept)
        out["ablated_nonkey_test_loss"] = float(F.cross_entropy(a_logits[te], y[te]))
    return out
