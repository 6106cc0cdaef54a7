"""Head detectors: ~1 on a hand-built previous-token / induction model, chance on a random model."""

from __future__ import annotations

import pytest
import torch

from mechscope.analysis.heads import (
    attention_patterns,
    detect_heads,
    detector_targets,
    duplicate_token_target,
    induction_target,
    pattern_scores,
    previous_token_target,
    rank_heads,
    repeated_tokens,
    uniform_baseline,
)
from mechscope.errors import ShapeError
from mechscope.models.config import AttentionConfig, ModelConfig, NormConfig
from mechscope.models.transformer import HookedTransformer
from tests.typecheck import ill_typed
from tests.unit.analysis.handbuilt import handbuilt_induction_model


def test_targets_on_a_known_sequence() -> None:
    toks = torch.tensor([[5, 6, 7, 5, 6, 7]])
    assert torch.equal(previous_token_target(toks)[0].nonzero(), torch.tensor([[i, i - 1] for i in range(1, 6)]))
    assert duplicate_token_target(toks)[0].nonzero().tolist() == [[3, 0], [4, 1], [5, 2]]
    assert induction_target(toks)[0].nonzero().tolist() == [[3, 1], [4, 2], [5, 3]]


def test_repeated_tokens_shape_and_distinct_halves() -> None:
    t = repeated_tokens(40, 10, batch=3, seed=1, bos=0, low=1)
    assert t.shape == (3, 21) and (t[:, 0] == 0).all() and (t[:, 1:] >= 1).all()
    assert torch.equal(t[:, 1:11], t[:, 11:])
    assert all(len(set(row.tolist())) == 10 for row in t[:, 1:11])


def test_handbuilt_model_scores_near_one() -> None:
    model = handbuilt_induction_model(d_vocab=12, n_ctx=24)
    scores = detect_heads(model, half_len=10, batch=4, seed=0)
    assert scores.previous_token[0, 0] > 0.95
    assert scores.induction[1, 0] > 0.9
    # the zero-weight heads attend uniformly: their scores sit at chance
    assert abs(float(scores.previous_token[0, 1]) - scores.chance["previous_token"]) < 0.02
    assert abs(float(scores.induction[1, 1]) - scores.chance["induction"]) < 0.02
    assert rank_heads(scores.induction, 1)[0][:2] == [1, 0]
    assert rank_heads(scores.previous_token, 1)[0][:2] == [0, 0]


def test_random_model_scores_near_chance() -> None:
    cfg = ModelConfig(d_model=32, n_layers=2, d_vocab=30, n_ctx=64, attention=AttentionConfig(n_heads=4, d_head=8),
                      mlp=None, norm=NormConfig(kind="none"))
    scores = detect_heads(HookedTransformer(cfg, seed=3), half_len=20, batch=4)
    for name in ("previous_token", "duplicate_token", "induction"):
        s = getattr(scores, name)
        assert (s - scores.chance[name]).abs().max() < 0.05, name
        assert scores.chance[name] < 0.2


def test_pattern_scores_is_mass_on_target_and_checks_shape() -> None:
    p = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]).expand(1, 1, 1, 2, 3)  # l b h q k
    target = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])
    assert float(pattern_scores(p.contiguous(), target)) == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ShapeError), ill_typed():
        pattern_scores(p.contiguous(), torch.ones(1, 3, 3))
    # uniform causal attention on the previous-token target of length 4: rows 1..3 give 1/2, 1/3, 1/4
    assert uniform_baseline(previous_token_target(torch.zeros(1, 4, dtype=torch.long))) == pytest.approx(
        (1 / 2 + 1 / 3 + 1 / 4) / 3)


def test_detector_targets_are_the_ones_detect_heads_scores() -> None:
    tokens = repeated_tokens(12, 5, batch=2, seed=0)
    kept = detector_targets(tokens, skip_first=False)
    skipped = detector_targets(tokens)
    assert torch.equal(kept["induction"], induction_target(tokens))
    assert kept["previous_token"][:, 1, 0].eq(1).all() and skipped["previous_token"][:, :, 0].eq(0).all()
    model = handbuilt_induction_model(d_vocab=12, n_ctx=24)
    hs = detect_heads(model, tokens)
    assert torch.allclose(hs.induction, pattern_scores(attention_patterns(model, tokens), skipped["induction"]))
