"""Compound-word examples are chosen right (B after A vs B elsewhere, document-aware) and probed end to end."""

from __future__ import annotations

import numpy as np

from mechscope.experiments.compound_words import WINDOW, compound_examples, doc_ids, probe_compound
from tests.conftest import tiny_model


def corpus(n=6000, seed=0):
    rng = np.random.default_rng(seed)
    toks = rng.integers(3, 50, n)
    toks[299::300] = 2  # document separators (each ends its document)
    at = rng.choice(np.arange(WINDOW + 1, n - 1), 400, replace=False)
    toks[at] = 7  # B
    toks[at[:200] - 1] = 5  # A before half of them
    return toks, at


def test_examples_and_documents():
    toks, _ = corpus()
    docs = doc_ids(toks, 2)
    assert docs[0] == 0 and docs[299] == 0 and docs[300] == 1
    pos, lab = compound_examples(toks, docs, 5, 7, max_per_class=50)
    assert len(pos) == 100 and lab.sum() == 50
    assert (toks[pos] == 7).all() and (toks[pos[lab == 1] - 1] == 5).all() and (toks[pos[lab == 0] - 1] != 5).all()


def test_probe_compound_on_a_tiny_model():
    toks, _ = corpus()
    res = probe_compound(tiny_model("gpt2", n_ctx=64), toks, doc_ids(toks, 2), 5, 7, batch_size=64)
    assert res["layer"] in (0, 1) and set(res["f1_at_k"]) == {"1", "2", "3", "5", "8", "16"}
    assert all(0.0 <= v <= 1.0 for v in [*res["f1_at_k"].values(), *res["f1_at_k_pca"].values()])
    assert len({n for _, n in res["top_neurons"]}) == 5
    assert all(lay == res["layer"] for lay, _ in res["top_neurons"])


def test_top_activations_lists_contexts():
    from mechscope.experiments.compound_words import top_activations
    from mechscope.tokens import Tokenizer

    toks, _ = corpus()
    out = top_activations(tiny_model("gpt2", n_ctx=64), toks, [(1, 3), (0, 5)], Tokenizer.bytes(), n_seq=8,
                          seq_len=32, top=4)
    assert len(out) == 2 and all(len(o) == 4 and all("|" in s for s in o) for o in out)
