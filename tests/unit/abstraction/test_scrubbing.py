"""Causal scrubbing: the everything / nothing hypotheses are exact; bad hypotheses get clear errors."""

from __future__ import annotations

import pytest
import torch

from mechscope.abstraction.scrubbing import Hypothesis, model_nodes, scrub
from mechscope.errors import ConfigError
from tests.conftest import tiny_model


def batch():
    g = torch.Generator().manual_seed(0)
    half = torch.randint(0, 50, (6, 8), generator=g)
    toks = torch.cat([half, half], 1)
    mask = torch.zeros_like(toks, dtype=torch.bool)
    mask[:, 8:] = True
    return toks, mask


@pytest.mark.parametrize("kind,resample", [("attn_only", "shared"), ("shortformer", "shared"),
                                           ("attn_only", "per_path"), ("shortformer", "per_path")])
def test_everything_recovers_100_and_nothing_0(kind, resample):
    model = tiny_model(kind)
    toks, mask = batch()
    every = scrub(model, Hypothesis.full("all", model_nodes(model)), toks, mask, resample=resample)
    assert every.loss == pytest.approx(every.loss_clean, abs=1e-5)
    assert every.loss_recovered == pytest.approx(1.0, abs=1e-3)
    nothing = scrub(model, Hypothesis("none", {}), toks, mask, resample=resample)
    assert nothing.loss == pytest.approx(nothing.loss_random, abs=1e-5)
    assert nothing.loss_recovered == pytest.approx(0.0, abs=1e-3)
    # a partial hypothesis lands elsewhere (the embedding path alone is not the whole model)
    part = scrub(model, Hypothesis.full("embed", ["embed"]), toks, mask, resample=resample)
    assert abs(part.loss - every.loss) > 1e-4


def test_per_path_draws_each_path_independently():
    model = tiny_model("attn_only")
    toks, mask = batch()
    shared = scrub(model, Hypothesis("none", {}), toks, mask, seed=3)
    per_path = scrub(model, Hypothesis("none", {}), toks, mask, seed=3, resample="per_path")
    assert shared.loss_clean == per_path.loss_clean
    # shared: the whole model on one random input; per path: each node's output from its own draw
    assert abs(per_path.loss_random - shared.loss_random) > 1e-4
    again = scrub(model, Hypothesis("none", {}), toks, mask, seed=3, resample="per_path")
    assert again == per_path  # seeded: the same draws
    part = Hypothesis.full("embed", ["embed"])
    assert abs(scrub(model, part, toks, mask, resample="per_path").loss - scrub(model, part, toks, mask).loss) > 1e-4
    with pytest.raises(ConfigError, match="resample must be one of"):
        scrub(model, part, toks, mask, resample="sometimes")


def test_unknown_node_and_models_with_mlps_are_refused():
    model = tiny_model("attn_only")
    toks, mask = batch()
    with pytest.raises(ConfigError, match=r"unknown model nodes \['7.0'\]"):
        scrub(model, Hypothesis.full("bad", ["embed", "7.0"]), toks, mask)
    with pytest.raises(ConfigError, match="q/k/v"):
        scrub(model, Hypothesis("bad", {"embed": lambda t, g: t, "1.0": lambda t, g: t},
                                frozenset({("embed", "1.0", "z")})), toks, mask)
    with pytest.raises(ConfigError, match="attention-only"):
        scrub(tiny_model("gpt2"), Hypothesis("x", {}), toks, mask)


def test_post_sublayer_models_are_refused():
    from mechscope.models.config import NormConfig

    model = tiny_model("attn_only", norm=NormConfig(kind="rmsnorm", post_sublayer=True))
    toks, mask = batch()
    with pytest.raises(ConfigError, match="post_sublayer"):
        scrub(model, Hypothesis.full("all", model_nodes(model)), toks, mask)
