"""The width x tokens sweep behind ``mechscope dict scaling``, and feature splitting across its widths.

:func:`run_sweep` trains one dictionary per (width, tokens) cell on a harvested store (each run resumable and
reused when rerun), evaluates every one on the same held-out rows (fraction of variance unexplained, L0,
dead fraction, firing-frequency quantiles) and writes ``results.json``; ``dictionaries.scaling`` fits the
laws. :func:`splits` matches latents of consecutive widths by decoder cosine and lists the families where
one latent split into several, with the tokens on which each child fires most.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def held_out_rows(model: Any, hook: str, *, corpus: str, n_rows: int, seq_len: int = 128, batch_size: int = 8,
                  tokenizer: str = "auto") -> tuple[Tensor, Tensor]:
    """``(rows [n d], token ids [n])`` of ``hook`` on the corpus's validation split (never trained on)."""
    from mechscope.experiments.scaling.contexts import held_out_sequences

    rows, seqs, keep = held_out_sequences(model, hook, corpus=corpus, n_rows=n_rows, seq_len=seq_len,
                                          batch_size=batch_size, tokenizer=tokenizer)
    return rows[:n_rows], seqs[keep][:n_rows]


@torch.no_grad()
def evaluate_rows(d: Any, rows: Tensor, batch: int = 2048) -> dict[str, float]:
    """FVU, L0, dead fraction and firing-frequency quantiles of ``d`` on ``rows``."""
    err = torch.zeros((), dtype=torch.float64)
    fired = torch.zeros(d.cfg.d_sae, dtype=torch.int64)
    l0 = 0.0
    for i in range(0, rows.shape[0], batch):
        x = rows[i:i + batch]
        out = d(x)
        err += (out.recons.double() - x.double()).pow(2).sum()
        active = out.acts != 0
        fired += active.sum(0)
        l0 += float(active.sum())
    var = float((rows.double() - rows.double().mean(0)).pow(2).sum())
    freq = fired.double() / rows.shape[0]
    alive = freq[freq > 0]
    q = torch.quantile(alive, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist() if alive.numel() else [0.0] * 3
    return {"loss": float(err) / max(var, 1e-30), "l0": l0 / rows.shape[0], "dead_fraction": float((freq == 0).double().mean()),
            "freq_p10": q[0], "freq_median": q[1], "freq_p90": q[2]}


def run_sweep(store_dir: str | Path, out_dir: str | Path, eval_rows: Tensor, *, widths: Sequence[int],
              tokens: Sequence[int], arch: str = "topk", k: int = 32, batch_size: int = 1024, lr: float = 1e-3,
              precision: str = "float32", progress: bool = True, seed_per_width: bool = False) -> list[dict[str, Any]]:
    """Train and evaluate every (width, tokens) cell; returns its rows and merges them into ``results.json``.

    ``seed_per_width``: initialise each width from its own seed (the width). With one shared seed a wider
    dictionary's initial decoder starts with the narrower one's rows, which biases latent matching across widths.
    """
    import time

    from mechscope.experiments.dictionaries import load_dictionary_dir, train_on_store

    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for w in widths:
        for t in tokens:
            run = out / f"w{w}-t{t}"
            steps = max(1, t // batch_size)
            t0 = time.time()
            if not (run / "dictionary" / "config.json").is_file():
                train_on_store(store_dir, run, arch, d_sae=w, options={"k": k, "seed": w if seed_per_width else 0},
                               batch_size=batch_size, steps=steps,
                               lr=lr, precision=precision, progress=progress)
            d = load_dictionary_dir(run)
            rows.append({"width": w, "tokens": steps * batch_size, "run": run.name, "d_in": d.cfg.d_in,
                         "train_seconds": round(time.time() - t0, 1)} | evaluate_rows(d, eval_rows))
    out.mkdir(parents=True, exist_ok=True)
    old = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else []
    fresh = {r["run"] for r in rows}
    merged = sorted([r for r in old if r["run"] not in fresh] + rows, key=lambda r: (r["width"], r["tokens"]))
    (out / "results.json").write_text(json.dumps(merged, indent=1))  # every cell run so far in this directory
    return rows


def splits(small: Any, large: Any, eval_rows: Tensor, token_ids: Tensor | None = None, *, threshold: float = 0.5,
           top_families: int = 5, top_tokens: int = 5, decode: Any = None) -> dict[str, Any]:
    """Match ``large``'s latents to ``small``'s; the families with most children and their top tokens."""
    from mechscope.dictionaries.scaling import match_latents

    m = match_latents(small.W_dec.detach().float().numpy(), large.W_dec.detach().float().numpy(), threshold)
    children = torch.as_tensor(m["children"])
    parent = torch.as_tensor(m["parent"])
    fams = []
    with torch.no_grad():
        acts_s, acts_l = small.encode(eval_rows), large.encode(eval_rows)
    for p in children.argsort(descending=True)[:top_families].tolist():
        kids = (parent == p).nonzero().flatten().tolist()
        fam: dict[str, Any] = {"parent": p, "n_children": len(kids),
                               "parent_freq": float((acts_s[:, p] > 0).float().mean()),
                               "children": []}
        for c in kids:
            col = acts_l[:, c]
            top = col.topk(min(top_tokens, col.shape[0])).indices
            words = None
            if token_ids is not None:
                ids = token_ids[top[col[top] > 0]].tolist()
                words = [decode([i]) if decode else i for i in ids]
            fam["children"].append({"latent": c, "cosine": float(m["cosine"][c]), "freq": float((col > 0).float().mean()),
                                    "top_tokens": words})
        fams.append(fam)
    return {"threshold": threshold, "n_small": int(children.numel()), "n_large": int(parent.numel()),
            "unmatched_large": int((parent < 0).sum()), "split_histogram": m["split_histogram"], "families": fams}


__all__ = ["evaluate_rows", "held_out_rows", "run_sweep", "splits"]
