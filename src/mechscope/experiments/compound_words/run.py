"""k-sparse probing of compound words (Gurnee et al. 2023) in a language model's MLP neurons.

For a compound "A B" (e.g. " context" + " manager", both single tokens) the positives are the positions of B
right after A in a real corpus, the negatives are positions of B after anything else, so a probe must detect
B *as part of the compound*, not B itself. For each example the model reads the 48 tokens ending at that
position; every layer's ``mlp.hook_post`` comes out of the same forward. Splits are by source document
(train 60 % / validation 10 % / test 30 %). Per layer and k ∈ {1, 2, 3, 5, 8, 16}: the top-k neurons of a
ranking (mean difference by default) get a logistic regression, scored by F1 on test; the reported layer is
the best by *validation* F1 at k = 3. The same is done on the layer's PCA components at equal k, and the
top neuron's strongest activations over ordinary corpus text show whether it is polysemantic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

COMPOUNDS = ("base class", "return value", "context manager", "default value", "keyword argument", "error message")
KS = (1, 2, 3, 5, 8, 16)
WINDOW = 48


def doc_ids(tokens: np.ndarray, separator: int) -> np.ndarray:
    """Document index of every token of a flat corpus array (documents end with ``separator``)."""
    sep = tokens == separator
    return np.concatenate([[0], np.cumsum(sep)[:-1]])


def compound_examples(tokens: np.ndarray, docs: np.ndarray, a: int, b: int, *, max_per_class: int = 100,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions (≥ WINDOW-1) of B after A (label 1) and of B after anything else (label 0), balanced."""
    idx = np.nonzero(tokens[WINDOW - 1:] == b)[0] + WINDOW - 1
    same_doc = docs[idx] == docs[idx - 1]
    pos, neg = idx[(tokens[idx - 1] == a) & same_doc], idx[tokens[idx - 1] != a]
    rng = np.random.default_rng(seed)
    n = min(len(pos), len(neg), max_per_class)
    pos, neg = rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)
    return np.concatenate([pos, neg]), np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])


def windows(tokens: np.ndarray, positions: np.ndarray) -> Tensor:
    """The ``WINDOW`` tokens ending at each position [n WINDOW]."""
    rows = positions[:, None] - np.arange(WINDOW - 1, -1, -1)[None, :]
    return torch.from_numpy(tokens[rows].astype(np.int64))


def probe_compound(model: Any, tokens: np.ndarray, docs: np.ndarray, a: int, b: int, *, ranking: str = "mean_diff",
                   milp: bool = False, seed: int = 0, batch_size: int = 16) -> dict[str, Any]:
    """F1 by k at every layer for one compound; the best layer's figures (see the module docstring)."""
    from mechscope.probes.dataset import collect, split_by_group
    from mechscope.probes.sparse import f1, f1_by_k, fit_on, milp_probe
    from mechscope.probes.sweep import layer_hooks

    positions, labels = compound_examples(tokens, docs, a, b, seed=seed)
    if len(labels) < 20:
        from mechscope.errors import ConfigError

        raise ConfigError(f"only {len(labels) // 2} positive examples of this compound in the corpus; need >= 10")
    hooks = layer_hooks("mlp.hook_post", model.cfg.n_layers)
    ds = collect(model, hooks, windows(tokens, positions), torch.full((len(labels),), -1), torch.from_numpy(labels),
                 groups=torch.from_numpy(docs[positions]), batch_size=batch_size)
    tr, va, te = split_by_group(ds.groups, (0.6, 0.1, 0.3), seed=seed)
    y = ds.labels
    per_layer = []
    for layer, h in enumerate(hooks):
        x = ds.acts[h]
        val = f1_by_k(x[tr], y[tr], x[va], y[va], (3,), ranking)[3][0]  # type: ignore[arg-type]
        per_layer.append((val, layer))
    layer = max(per_layer)[1]
    x = ds.acts[hooks[layer]]
    res = f1_by_k(x[tr], y[tr], x[te], y[te], KS, ranking)  # type: ignore[arg-type]
    # PCA components of the same layer at equal k (fit on train)
    mu = x[tr].mean(0)
    _, _, v = torch.linalg.svd(x[tr] - mu, full_matrices=False)
    pca = lambda z: (z - mu) @ v[:max(KS)].T  # noqa: E731
    pca_res = f1_by_k(pca(x[tr]), y[tr], pca(x[te]), y[te], KS, ranking)  # type: ignore[arg-type]
    out: dict[str, Any] = {"layer": layer, "n_examples": len(labels), "n_test": len(te),
                           "f1_at_k": {str(k): round(res[k][0], 4) for k in KS},
                           "f1_at_k_pca": {str(k): round(pca_res[k][0], 4) for k in KS},
                           "f1_at_3_by_layer_val": [round(v_, 4) for v_, _ in per_layer],
                           "top_neurons": [[layer, int(n)] for n in res[max(KS)][1][:5]]}
    if milp:
        mres = {}
        for k in (1, 2, 3, 5, 8):
            p = milp_probe(x[tr], y[tr], k, n_candidates=32, time_limit=20.0)
            refit = fit_on(x[tr], y[tr], p.neurons, "milp")
            mres[str(k)] = {"f1": round(f1(refit.predict(x[te]), y[te]), 4), "optimal": p.optimal,
                            "method": p.method, "neurons": p.neurons}
        out["milp"] = mres
    return out


def top_activations(model: Any, tokens: np.ndarray, neurons: list[tuple[int, int]], tokenizer: Any, *,
                    n_seq: int = 48, seq_len: int = 128, top: int = 8, seed: int = 0) -> list[list[str]]:
    """For each (layer, neuron): the ``top`` strongest activations over random corpus text, as "prev|token"."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(tokens) - seq_len, n_seq)
    seqs = torch.from_numpy(tokens[starts[:, None] + np.arange(seq_len)[None, :]].astype(np.int64))
    layers = sorted({ly for ly, _ in neurons})
    names = [f"blocks.{ly}.mlp.hook_post" for ly in layers]
    acts: dict[int, list[Tensor]] = {ly: [] for ly in layers}
    with torch.inference_mode():
        for lo in range(0, n_seq, 16):
            _, cache = model.run_with_cache(seqs[lo:lo + 16], names=names)
            for ly in layers:
                acts[ly].append(cache[f"blocks.{ly}.mlp.hook_post"])
    out = []
    for ly, n in neurons:
        a = torch.cat(acts[ly])[:, 1:, n]  # [n_seq pos-1]
        flat = a.flatten().topk(top).indices
        rows, cols = flat // a.shape[1], flat % a.shape[1] + 1
        out.append([f"{tokenizer.to_string([int(seqs[r, c - 1])])}|{tokenizer.to_string([int(seqs[r, c])])}"
                    for r, c in zip(rows.tolist(), cols.tolist())])
    return out


def compound_corpus(corpus: str, max_documents: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The corpus's SmolLM2 tokens (all documents in one train split) and each token's document id."""
    from mechscope.data.corpus import CorpusConfig, load_corpus

    c = load_corpus(CorpusConfig(source=corpus, tokenizer="smollm2", val_fraction=0.0, max_documents=max_documents))
    tokens = np.asarray(c.train.tokens)
    return tokens, doc_ids(tokens, c.train.separator)


def compound_tokens(tok: Any, compound: str) -> tuple[int, int]:
    """The token ids of " A" and " B" for the compound "A B" (each must be one token)."""
    first, second = compound.split()
    return tok.to_single_token(" " + first), tok.to_single_token(" " + second)


def run(model_name: str | Any, *, corpus: str = "stdlib-docs", max_documents: int | None = None,
        compounds: tuple[str, ...] = COMPOUNDS, ranking: str = "mean_diff", milp: bool = False,
        out: Path | None = None, seed: int = 0) -> dict[str, Any]:
    """``{"results": [{"feature", "layer", "f1_at_k", "top_neurons", ...}]}`` for every compound found."""
    if isinstance(model_name, str):
        from mechscope.cli.common import load_model

        model = load_model(model_name)
    else:
        model = model_name
    tokens, docs = compound_corpus(corpus, max_documents)
    tok = model.tokenizer
    results = []
    for comp in compounds:
        a, b = compound_tokens(tok, comp)
        r = probe_compound(model, tokens, docs, a, b, ranking=ranking, milp=milp, seed=seed)
        results.append({"feature": comp, **r})
    tops = top_activations(model, tokens, [tuple(r["top_neurons"][0]) for r in results], tok, seed=seed)  # type: ignore[misc]
    for r, t in zip(results, tops):
        r["top_neuron_top_activations"] = t
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        f1_figure(results).savefig(out / "sparse_f1_vs_k.png", dpi=110)
    return {"model": str(model_name) if isinstance(model_name, str) else "model", "corpus": corpus,
            "ranking": ranking, "results": results}


def f1_figure(results: list[dict[str, Any]]) -> Any:
    """F1 against k (log axis), one line per compound (its best layer), PCA dashed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    for r in results:
        ks = [int(k) for k in r["f1_at_k"]]
        line, = ax.plot(ks, list(r["f1_at_k"].values()), "o-", label=f"{r['feature']} (L{r['layer']})")
        ax.plot(ks, list(r["f1_at_k_pca"].values()), ":", color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (neurons; dotted: PCA components)")
    ax.set_ylabel("test F1")
    ax.set_title("k-sparse probes for compound words")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


__all__ = ["COMPOUNDS", "compound_corpus", "compound_examples", "compound_tokens", "doc_ids", "f1_figure", "probe_compound", "run", "top_activations"]
