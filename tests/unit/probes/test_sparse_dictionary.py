"""Sparse probing on dictionary latents vs neurons vs PCA: a planted detector latent wins at k = 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechscope.dictionaries.topk import TopKConfig, TopKDictionary
from mechscope.errors import ConfigError
from mechscope.experiments.compound_words import compound_examples, doc_ids, windows
from mechscope.experiments.sparse_dictionary.run import probe_dictionary_compound
from tests.conftest import tiny_model


def corpus(n=6000, seed=0):
    """Mostly a filler token, so the token before B is the main thing that varies at B's position."""
    import numpy as np

    rng = np.random.default_rng(seed)
    toks = np.full(n, 3)
    toks[299::300] = 2  # document separators
    at = rng.choice(np.arange(50, n - 1, 3), 400, replace=False)
    toks[at] = 7  # B
    toks[at[:200] - 1] = 5  # A before half of them
    toks[at[200:] - 1] = rng.integers(8, 50, 200)  # something else before the others
    return toks, at

HOOK = "blocks.1.hook_resid_post"


def _planted(model, toks, docs):
    """A TopK dictionary whose latent 3 is a (strong) logistic-regression detector of the compound."""
    from sklearn.linear_model import LogisticRegression

    pos, lab = compound_examples(toks, docs, 5, 7)
    with torch.no_grad():
        _, cache = model.run_with_cache(windows(toks, pos), names=[HOOK])
    x, y = cache[HOOK][:, -1], torch.from_numpy(lab)
    clf = LogisticRegression(C=100.0, max_iter=5000).fit(x.double().numpy(), y.numpy())
    d = torch.tensor(clf.coef_[0], dtype=torch.float32)
    mid = -float(clf.intercept_[0]) / float(d.norm())
    d = d / d.norm()
    sae = TopKDictionary(TopKConfig(d_in=32, d_sae=16, k=2, hook_name=HOOK, b_dec_init="zeros", seed=1))
    with torch.no_grad():
        sae.b_dec.zero_()
        sae.W_enc[:, 3] = 50 * d
        sae.b_enc[3] = -50 * mid
    return sae


def test_planted_latent_beats_at_k1() -> None:
    toks, _ = corpus()
    docs = doc_ids(toks, 2)
    model = tiny_model("gpt2", n_ctx=64)
    res = probe_dictionary_compound(model, _planted(model, toks, docs), toks, docs, 5, 7, batch_size=64)
    assert res["top_latents"][0] == 3 and res["layer"] == 1 and res["neuron_hook"] == "blocks.1.mlp.hook_post"
    f1 = {name: res[f"f1_at_k_{name}"]["1"] for name in ("latents", "neurons", "pca", "resid")}
    assert f1["latents"] >= 0.75 and f1["latents"] > max(f1["neurons"], f1["pca"], f1["resid"]) + 0.05, f1
    assert res["top_latent_fires"]["positives"] > res["top_latent_fires"]["negatives"]
    for name in ("latents", "neurons", "pca", "resid"):
        assert set(res[f"f1_at_k_{name}"]) == {"1", "2", "3", "5", "8", "16"}
        assert all(0 <= v <= 1 for v in res[f"f1_at_k_{name}"].values())


def test_dictionary_on_a_non_block_hook_is_refused() -> None:
    toks, _ = corpus()
    sae = TopKDictionary(TopKConfig(d_in=32, d_sae=16, k=2, hook_name="hook_embed"))
    with pytest.raises(ConfigError, match="not a block hook"):
        probe_dictionary_compound(tiny_model("gpt2", n_ctx=64), sae, toks, doc_ids(toks, 2), 5, 7)


def test_compound_corpus_and_tokens_shared_by_both_studies() -> None:
    from mechscope.data.corpus import load_tokenizer
    from mechscope.experiments.compound_words.run import compound_corpus, compound_tokens

    tokens, docs = compound_corpus("stdlib-docs", 3)
    assert tokens.shape == docs.shape and int(docs.max()) == 2 and (np.diff(docs) >= 0).all()
    tok = load_tokenizer("smollm2")
    a, b = compound_tokens(tok, "context manager")
    assert tok.to_string([a]) == " context" and tok.to_string([b]) == " manager"
