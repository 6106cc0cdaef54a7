"""Feature absorption on a first-letter task (after SAEBench's absorption metric; Chanin et al. 2024).

A residual-stream SAE usually has a latent for "this token starts with L". *Absorption*: on some tokens that
start with L (" lion") that latent stays silent, because a more specific latent fired instead and its
decoder direction carries the "starts with L" component. Measured here, per letter:

1. a linear probe (multinomial logistic regression on the rows) gives the ground-truth direction of each
   first letter; only tokens the probe classifies correctly count (the model does represent their letter);
2. the letter's *main latent* is the one whose firing best predicts the letter on the probe's training
   rows (highest F1, all latents at once as one matrix product);
3. on held-out rows of that letter: a **false negative** is a row where the main latent is silent; it is
   **absorbed** when some other firing latent's decoder has cosine >= ``cos_threshold`` with the probe
   direction (the letter information went into it).

Reported: the probe's accuracy, mean main-latent F1, false-negative rate, absorption rate (absorbed /
probe-correct rows), per letter and pooled. A simplified, small-scale version of SAEBench's metric (one
main latent, not a k-sparse probe; no integrated-gradient ablation), so compare dictionaries with it, not
with SAEBench's published numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mechscope.errors import ConfigError


def first_letters(token_ids: Sequence[int] | Tensor, decode: Callable[[list[int]], str],
                  min_letters: int = 2) -> np.ndarray:
    """``[n]`` lowercase first letter of each token that is a space-prefixed alphabetic word, '' otherwise."""
    out = []
    cache: dict[int, str] = {}
    for t in (token_ids.tolist() if isinstance(token_ids, Tensor) else list(token_ids)):
        if t not in cache:
            s = decode([t])
            word = s[1:] if s.startswith(" ") else ""
            cache[t] = word[0].lower() if len(word) >= min_letters and word.isascii() and word.isalpha() else ""
        out.append(cache[t])
    return np.asarray(out)


def letter_probe(rows: Tensor, letters: np.ndarray, seed: int = 0) -> tuple[Any, np.ndarray, np.ndarray]:
    """Multinomial logistic probe on the labelled rows; returns ``(model, train_mask, test_mask)``."""
    from sklearn.linear_model import LogisticRegression

    idx = np.flatnonzero(letters != "")
    if idx.size < 50:
        raise ConfigError(f"only {idx.size} rows are first-letter tokens; use more rows")
    rng = np.random.default_rng(seed)
    train = np.zeros(letters.size, bool)
    train[rng.permutation(idx)[: idx.size // 2]] = True
    test = np.zeros(letters.size, bool)
    test[idx] = True
    test &= ~train
    x = rows.double().numpy()
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    probe = LogisticRegression(max_iter=500, C=0.1).fit((x[train] - mu) / sd, letters[train])
    probe.mu_, probe.sd_ = mu, sd
    return probe, train, test


@torch.no_grad()
def absorption(dictionary: Any, rows: Tensor, letters: np.ndarray, *, cos_threshold: float = 0.1,
               min_test: int = 10, seed: int = 0, batch: int = 2048) -> dict[str, Any]:
    """The absorption report of ``dictionary`` on ``rows`` labelled by ``letters`` (see module docstring)."""
    probe, train, test = letter_probe(rows, letters, seed)
    x = rows.double().numpy()
    pred = probe.predict((x - probe.mu_) / probe.sd_)
    acts = torch.cat([dictionary.encode(rows[i:i + batch]) for i in range(0, rows.shape[0], batch)]) > 0
    fired = acts.double()
    dec = torch.nn.functional.normalize(dictionary.W_dec.detach().double(), dim=1)  # [d_sae d]
    per_letter: dict[str, dict[str, float]] = {}
    tot = {"correct": 0, "fn": 0, "absorbed": 0}
    f1s = []
    for i, letter in enumerate(probe.classes_):  # one small step per letter (<= 26)
        y = torch.as_tensor(letters == letter)
        tp = fired[torch.as_tensor(train)].T @ y[torch.as_tensor(train)].double()  # [d_sae] true positives
        n_fire = fired[torch.as_tensor(train)].sum(0)
        f1 = 2 * tp / (n_fire + y[torch.as_tensor(train)].sum()).clamp_min(1)
        main = int(f1.argmax())
        ok = torch.as_tensor(test & (letters == letter) & (pred == letter))
        if int(ok.sum()) < min_test:
            continue
        # the probe's direction in activation space (undo the standardisation)
        coef = probe.coef_[i] if probe.coef_.shape[0] > 1 else probe.coef_[0] * (1 if i == 1 else -1)  # binary
        direction = torch.as_tensor(coef / probe.sd_)
        cos = dec @ (direction / direction.norm())  # [d_sae]
        aligned = (cos >= cos_threshold)
        aligned[main] = False
        fn = ok & ~acts[:, main]
        absorbed = fn & (acts & aligned).any(1)
        n_ok, n_fn, n_abs = int(ok.sum()), int(fn.sum()), int(absorbed.sum())
        per_letter[str(letter)] = {"main_latent": main, "main_f1": float(f1[main]), "n": n_ok,
                                   "false_negative_rate": n_fn / n_ok, "absorption_rate": n_abs / n_ok,
                                   "main_cosine": float(cos[main])}
        tot["correct"] += n_ok
        tot["fn"] += n_fn
        tot["absorbed"] += n_abs
        f1s.append(float(f1[main]))
    probe_acc = float((pred[test] == letters[test]).mean())
    n = max(tot["correct"], 1)
    return {"probe_accuracy": probe_acc, "letters": len(per_letter), "rows": int(tot["correct"]),
            "mean_main_f1": float(np.mean(f1s)) if f1s else float("nan"),
            "false_negative_rate": tot["fn"] / n, "absorption_rate": tot["absorbed"] / n,
            "cos_threshold": cos_threshold, "per_letter": per_letter}


__all__ = ["absorption", "first_letters", "letter_probe"]
