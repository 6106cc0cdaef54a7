"""The induction experiment end to end on a tiny corpus and tiny models (wiring, JSON, resumable runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mechscope.errors import ConfigError
from mechscope.experiments.induction import InductionConfig, analyze, halfway_step, public, train


def test_train_analyze_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(60):
        (docs / f"{i}.txt").write_text(f"def f{i}(x):\n    return x + {i}\n" * 30)
    cfg = InductionConfig(corpus=str(docs), n_ctx=64, d_model=16, n_heads=2, d_head=8, batch_size=2, steps=4,
                          one_layer_steps=2, zero_layer_steps=2, eval_every=2, checkpoint_every=2, warmup_steps=1)
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["two_layer"]["steps"] == 4
    result = analyze(tmp_path / "run")
    pub = json.loads(json.dumps(public(result)))
    for key in ("bigram_corr", "skip_trigrams", "induction_heads", "prev_token_heads", "k_composition_top",
                "icl_score_final", "phase_change_step"):
        assert key in pub, key
    assert len(pub["skip_trigrams"]) == 20 and "logit_effect" in pub["skip_trigrams"][0]
    assert all(len(row) == 4 and row[3] == pub["composition_baseline"] for row in pub["k_composition_top"])
    assert [r["step"] for r in [{"step": s} for s in result["_curve"]["step"]]] == [0, 2, 4]
    # a finished run is not retrained
    assert train(cfg, tmp_path / "run", progress=False)["two_layer"] == "already trained"


def test_halfway_step_and_config_checks() -> None:
    assert halfway_step([0, 1, 2, 3, 4, 5], [0.0, 0.0, 0.1, 0.6, 0.9, 0.9]) == 3
    assert halfway_step([0, 1, 2, 3, 4], [0.0, -0.1, -0.5, -0.6, -0.6]) == 2
    assert halfway_step([0, 1, 2, 3], [0.0, 0.01, 0.02, 0.01], min_change=0.1) is None
    with pytest.raises(ConfigError, match="n_ctx"):
        InductionConfig(n_ctx=32)
