"""Truth datasets are balanced and large enough; the CCS study runs end to end on a tiny model."""

from __future__ import annotations

import pytest

from mechscope.data.tasks.truth import DATASETS, contrast_texts, statements
from mechscope.errors import ConfigError


@pytest.mark.parametrize("name", DATASETS)
def test_datasets_are_balanced_and_big(name):
    items = statements(name)
    assert len(items) >= 200 and sum(s.label for s in items) * 2 == len(items)
    assert len({s.text for s in items}) == len(items)  # no statement twice (it would straddle splits)
    q, t, f = contrast_texts(items[:3])
    assert t[0].startswith(q[0]) and t[0].endswith(" True") and f[0].endswith(" False")


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown truth dataset"):
        statements("nope")


def test_ccs_study_runs_on_a_tiny_model():
    from mechscope.experiments.truth import ccs_study
    from mechscope.tokens import Tokenizer
    from tests.conftest import tiny_model

    model = tiny_model("gpt2", d_vocab=257, n_ctx=128)
    model.tokenizer = Tokenizer.bytes()
    res = ccs_study(model, "compare", restarts=2, epochs=20, batch_size=64, max_items=48)
    assert res["n"] == 48 and res["layer"] in (0, 1) and len(res["by_layer"]) == 2
    for k in ("ccs", "logistic", "zero_shot", "random"):
        assert 0.0 <= res[k] <= 1.0
