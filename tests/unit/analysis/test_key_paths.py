"""Causal K-composition (``analysis.key_paths``) on the hand-built induction circuit, whose answer is known."""

from __future__ import annotations

import pytest
import torch

from mechscope.analysis.heads import detect_heads, induction_target, repeated_tokens
from mechscope.analysis.key_paths import key_path_effects
from mechscope.errors import ConfigError, ShapeError
from mechscope.experiments.induction.analysis import circuit_verdict
from tests.unit.analysis.handbuilt import handbuilt_induction_model


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_only_the_previous_token_head_feeds_the_induction_key(ablation: str) -> None:
    model = handbuilt_induction_model(d_vocab=12, n_ctx=24)
    tokens = repeated_tokens(12, 10, batch=4, seed=0)
    drop, clean = key_path_effects(model, tokens, induction_target(tokens), sender_layer=0, receiver_layer=1,
                                   ablation=ablation)
    assert drop.shape == (2, 2) and clean.shape == (2,)
    assert clean[0] > 0.9  # head 1.0 is an induction head
    # removing head 0.0 from 1.0's key leaves uniform attention: the score falls to chance
    assert drop[0, 0] > 0.8 and clean[0] - drop[0, 0] < 0.1
    # the zero-weight head 0.1 feeds nothing; head 1.1 (uniform) depends on nothing
    assert drop[1].abs().max() < 1e-5 and drop[:, 1].abs().max() < 1e-5
    # the clean scores are the detector's
    assert torch.allclose(clean, detect_heads(model, tokens, skip_first=False).induction[1], atol=1e-6)


def test_key_path_matches_a_one_head_at_a_time_loop() -> None:
    """The batched variants equal removing each sender on its own with a plain hook."""
    torch.manual_seed(0)
    model = handbuilt_induction_model(d_vocab=12, n_ctx=24)
    with torch.no_grad():  # perturb so every sender matters a little
        for prm in model.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    tokens = repeated_tokens(12, 10, batch=3, seed=1)
    target = induction_target(tokens)
    drop, clean = key_path_effects(model, tokens, target, sender_layer=0, receiver_layer=1, ablation="zero")
    _, cache = model.run_with_cache(tokens, names=["blocks.0.attn.hook_result"])
    from mechscope.analysis.heads import pattern_scores

    for s in range(2):
        res = cache["blocks.0.attn.hook_result"][:, :, s, None]
        pats: list[torch.Tensor] = []

        def remove(x: torch.Tensor, hook: object, res: torch.Tensor = res) -> torch.Tensor:
            return x - res

        def keep(p: torch.Tensor, hook: object, pats: list[torch.Tensor] = pats) -> None:
            pats.append(p)

        model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_k_input", remove), ("blocks.1.attn.hook_pattern", keep)])
        assert torch.allclose(clean - pattern_scores(pats[0][None], target)[0], drop[s], atol=1e-5)


def test_key_path_refuses_bad_layers_and_shapes() -> None:
    model = handbuilt_induction_model(d_vocab=12, n_ctx=24)
    tokens = repeated_tokens(12, 5, batch=2, seed=0)
    with pytest.raises(ConfigError, match="sender_layer < receiver_layer"):
        key_path_effects(model, tokens, induction_target(tokens), sender_layer=1, receiver_layer=1)
    with pytest.raises(ConfigError, match="'mean' or 'zero'"):
        key_path_effects(model, tokens, induction_target(tokens), sender_layer=0, receiver_layer=1,
                         ablation="resample")
    with pytest.raises(ShapeError, match="target"):
        key_path_effects(model, tokens, induction_target(tokens)[:, :, :-1], sender_layer=0, receiver_layer=1)


def test_circuit_verdict_checks_each_criterion() -> None:
    ok = {"induction": 0.64, "causal_partner_prev_token": 0.52, "causal_partner_share": 0.63}
    assert circuit_verdict(ok)["formed"]
    for key, bad in (("induction", 0.3), ("causal_partner_prev_token", 0.37), ("causal_partner_share", 0.2)):
        verdict = circuit_verdict({**ok, key: bad})
        assert not verdict["formed"] and list(verdict["checks"].values()).count(False) == 1


def test_key_path_with_post_sublayer_norms_removes_what_the_head_adds() -> None:
    """Gemma-2/3 shape: a sender's output is its result through ln1_post at the forward's scale. With one live
    head in the sender layer, that is the layer's whole hook_attn_out: removing it by hand must agree."""
    from mechscope.analysis.heads import pattern_scores
    from tests.norm_models import gemma_like

    model = gemma_like(seed=9)
    with torch.no_grad():
        model.blocks[0].attn.W_O[1:] = 0.0  # only head 0 writes
    tokens = repeated_tokens(40, 6, batch=2, seed=2)
    target = induction_target(tokens)
    drop, clean = key_path_effects(model, tokens, target, sender_layer=0, receiver_layer=1, ablation="zero")
    _, cache = model.run_with_cache(tokens, names=["blocks.0.hook_attn_out"])
    out = cache["blocks.0.hook_attn_out"][:, :, None]
    pats: list[torch.Tensor] = []
    model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_k_input", lambda x, hook: x - out),
                                            ("blocks.1.attn.hook_pattern", lambda p, hook: pats.append(p))])
    want = clean - pattern_scores(pats[0][None].float(), target)[0]
    assert want.abs().max() > 1e-3  # removing it matters
    assert torch.allclose(drop[0], want, atol=1e-6) and drop[1:].abs().max() < 1e-6
