"""The induction experiment end to end on a tiny corpus and tiny models (wiring, JSON, resumable runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mechscope.errors import ConfigError
from mechscope.experiments.induction.analysis import analyze, halfway_step, public
from mechscope.experiments.induction.config import InductionConfig, load_config
from mechscope.experiments.induction.run import train


def test_train_analyze_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(60):
        (docs / f"{i}.txt").write_text(f"def f{i}(x):\n    return x + {i}\n" * 30)
    cfg = InductionConfig(corpus=str(docs), tokenizer="bytes", vocab_size=None, n_ctx=64, d_model=16, n_heads=2, d_head=8, batch_size=2, steps=4,
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
    # four updates form no circuit, and the verdict says which criteria failed
    best = pub["best_induction_head"]
    assert len(best["key_path_drops"]) == 2 and best["causal_partner"][1] in (0, 1)
    assert pub["circuit"]["formed"] is False and not pub["circuit"]["checks"]["induction_head"]
    from typer.testing import CliRunner

    from mechscope.cli.induction import app
    from mechscope.experiments.induction.report import summary_html

    assert "Induction head fed by a previous-token head: not formed</b> (failed: induction_head" in summary_html(result)
    text = CliRunner().invoke(app, ["analyze", str(tmp_path / "run")])
    assert text.exit_code == 0 and "circuit: induction head fed by a previous-token head: not formed (failed: " \
        "induction_head" in text.output, text.output
    # a finished run is not retrained
    assert train(cfg, tmp_path / "run", progress=False)["two_layer"] == "already trained"
    # a run saved before pos_init existed reads back as what it was: random initial positions
    saved = json.loads((tmp_path / "run" / "induction_config.json").read_text())
    assert saved["pos_init"] == "sinusoidal"
    del saved["pos_init"]
    (tmp_path / "run" / "induction_config.json").write_text(json.dumps(saved))
    assert load_config(tmp_path / "run").pos_init == "normal"


def test_halfway_step_and_config_checks() -> None:
    assert halfway_step([0, 1, 2, 3, 4, 5], [0.0, 0.0, 0.1, 0.6, 0.9, 0.9]) == 3
    assert halfway_step([0, 1, 2, 3, 4], [0.0, -0.1, -0.5, -0.6, -0.6]) == 2
    assert halfway_step([0, 1, 2, 3], [0.0, 0.01, 0.02, 0.01], min_change=0.1) is None
    with pytest.raises(ConfigError, match="n_ctx"):
        InductionConfig(n_ctx=32)


def test_repeated_batches_and_plateau_stop() -> None:
    import torch

    from mechscope.experiments.induction.config import _plateau_stop
    from mechscope.experiments.induction.run import RepeatedBatches

    class Counter:
        """A batch source whose rows are 0..8 offset by row index (so repeats are recognisable)."""

        def __init__(self) -> None:
            self.step = 0

        def next_batch(self) -> torch.Tensor:
            self.step += 1
            return torch.arange(9)[None, :] + 100 * torch.arange(4)[:, None]

        def state(self) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
            return {"step": self.step}, {}

        def load_state(self, meta: dict[str, int], tensors: dict[str, torch.Tensor]) -> None:
            self.step = meta["step"]

    src = RepeatedBatches(Counter(), 0.5, seed=3)
    b = src.next_batch()
    assert b.shape == (4, 9)
    for r, row in enumerate(b[:2].tolist()):  # a prefix of k >= 5 tokens, then a copy of an earlier span
        k = next((i for i in range(1, 9) if row[i] != row[i - 1] + 1), 9)
        assert row[:k] == list(range(100 * r, 100 * r + k)) and k >= 5
        tail = row[k:]
        assert tail and tail[0] >= 100 * r and tail == list(range(tail[0], tail[0] + len(tail)))
        assert tail[-1] < 100 * r + k  # copied from inside the prefix
    assert b[2].tolist() == list(range(200, 209))  # untouched rows
    meta, _ = src.state()
    assert meta == {"step": 1, "repeat_calls": 1}
    nxt = src.next_batch()
    again = RepeatedBatches(Counter(), 0.5, seed=3)
    again.load_state(meta, {})
    assert torch.equal(again.next_batch(), nxt)  # resuming reproduces the draws
    # the cool-down: after `until` batches the rows are the corpus as is, also after a resume
    cool = RepeatedBatches(Counter(), 1.0, seed=3, until=2)
    copied = [not torch.equal(cool.next_batch(), Counter().next_batch()) for _ in range(2)]
    meta, _ = cool.state()
    resumed = RepeatedBatches(Counter(), 1.0, seed=3, until=2)
    resumed.load_state(meta, {})
    assert copied == [True, True] and torch.equal(resumed.next_batch(), Counter().next_batch())
    half = RepeatedBatches(Counter(), 1.0, seed=3, until=1, after=0.5)
    half.next_batch()
    later = half.next_batch()  # the cool-down copies into the first half of the rows only
    assert not torch.equal(later[:2], Counter().next_batch()[:2]) and torch.equal(later[2:], Counter().next_batch()[2:])
    with pytest.raises(ConfigError, match="cooldown_repeat_frac"):
        InductionConfig(cooldown_repeat_frac=-0.1)
    with pytest.raises(ConfigError, match="curriculum_steps"):
        InductionConfig(curriculum_steps=0)
    stop = _plateau_stop(InductionConfig(stop_at_induction=0.5, plateau_evals=3))
    assert [stop({"induction_best": v}) for v in (0.1, 0.6, 0.61, 0.3, 0.6, 0.62, 0.61)] == \
        [False, False, False, False, False, False, True]
    assert not stop({"loss": 1.0})  # training-only records never stop the run
    with pytest.raises(ConfigError):
        InductionConfig(repeat_frac=1.5)
    with pytest.raises(ConfigError):
        InductionConfig(stop_at_induction=0.0)
    with pytest.raises(ConfigError, match="precision"):
        InductionConfig(precision="float16")
    with pytest.raises(ConfigError, match="val_sequences"):
        InductionConfig(val_sequences=0)
    assert InductionConfig(positional="shortformer").positional == "shortformer"


def test_cli_train_defaults_are_the_config_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mechscope induction train --out DIR` with no other option trains exactly ``InductionConfig()``."""
    from typer.testing import CliRunner

    import mechscope.experiments.induction.run as run_module
    from mechscope.cli.induction import app

    seen: list[InductionConfig] = []
    monkeypatch.setattr(run_module, "train", lambda cfg, out, **kw: seen.append(cfg) or {})
    res = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert seen == [InductionConfig()]


def test_cooldown_added_by_resuming_equals_a_run_made_with_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished copy-curriculum run of N updates continued with ``--steps N+C --curriculum-steps N`` is bit for
    bit the run trained with those settings from the start (how the recorded seeds got their cool-down)."""
    import dataclasses

    from mechscope.models.transformer import HookedTransformer

    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(60):
        (docs / f"{i}.txt").write_text(f"def f{i}(x):\n    return x + {i}\n" * 30)
    base = InductionConfig(corpus=str(docs), tokenizer="bytes", vocab_size=None, n_ctx=64, d_model=16, n_heads=2,
                           d_head=8, batch_size=2, steps=4, eval_every=2, checkpoint_every=2, warmup_steps=1,
                           repeat_frac=1.0)
    cooled = dataclasses.replace(base, steps=6, curriculum_steps=4, cooldown_repeat_frac=0.0)
    train(base, tmp_path / "a", progress=False, only=("two_layer",))
    train(cooled, tmp_path / "a", progress=False, only=("two_layer",), resume=True)
    train(cooled, tmp_path / "b", progress=False, only=("two_layer",))
    a = HookedTransformer.load(tmp_path / "a" / "two_layer" / "final").state_dict()
    b = HookedTransformer.load(tmp_path / "b" / "two_layer" / "final").state_dict()
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    no_cool = dataclasses.replace(base, steps=6)
    train(no_cool, tmp_path / "c", progress=False, only=("two_layer",))
    c = HookedTransformer.load(tmp_path / "c" / "two_layer" / "final").state_dict()
    assert not all(a[k].equal(c[k]) for k in a)  # the cool-down batches differ from copy batches
    from mechscope.experiments.induction.report import figures

    res = analyze(tmp_path / "b")
    steps = res["_curve"]["step"]
    assert steps == [0, 2, 4, 6] and res["icl_score_before_cooldown"] == round(res["_curve"]["icl_score"][2], 4)
    assert "icl_score_before_cooldown" not in analyze(tmp_path / "c")
    from mechscope.experiments.induction.config import cooldown_start

    assert (cooldown_start(cooled), cooldown_start(no_cool), res["_cooldown_from"]) == (4, None, 4)
    assert figures(res, tmp_path / "img")["phase_change"].is_file()
