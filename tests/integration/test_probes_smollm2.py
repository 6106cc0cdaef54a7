"""SmolLM2 probing studies end to end (slow; the recorded figures are in docs/probes.md)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_compound_word_is_detected_by_few_neurons(smollm2):
    import numpy as np

    from mechscope.data.corpus import CorpusConfig, load_corpus
    from mechscope.experiments.compound_words import doc_ids, probe_compound

    c = load_corpus(CorpusConfig(source="stdlib-docs", tokenizer="smollm2", val_fraction=0.0))
    toks = np.asarray(c.train.tokens)
    tok = smollm2.tokenizer
    res = probe_compound(smollm2, toks, doc_ids(toks, c.train.separator), tok.to_single_token(" return"),
                         tok.to_single_token(" value"))
    assert res["f1_at_k"]["3"] > 0.8  # recorded: 0.95 at layer 24


@pytest.mark.slow
def test_ccs_study_runs_and_logistic_beats_chance_somewhere(smollm2):
    from mechscope.experiments.truth import ccs_study

    res = ccs_study(smollm2, "capitals", restarts=2, epochs=100)
    assert res["n"] == 300 and len(res["by_layer"]) == 30
    assert max(r["logistic"] for r in res["by_layer"]) > 0.6  # recorded: 0.67 (layer 28)
