"""Configs check types and ranges and refuse unknown keys at every level, with messages naming the field."""

from __future__ import annotations

import pytest

from mechscope.dictionaries.registry import config_from_dict
from mechscope.errors import ConfigError
from mechscope.experiments.grokking.config import GrokkingConfig
from mechscope.models.config import AttentionConfig, ModelConfig, PositionalConfig
from mechscope.train.config import TrainConfig
from tests.helpers import tiny_cfg
from tests.typecheck import ill_typed


def _cfg_dict() -> dict:
    return tiny_cfg("llama").to_dict()


def test_round_trip_still_works():
    for kind in ("gpt2", "neox", "llama", "attn_only", "shortformer"):
        cfg = tiny_cfg(kind)
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_misspelt_nested_key_is_an_error_not_plain_mha():
    d = _cfg_dict()
    d["attention"]["n_head_kv"] = d["attention"].pop("n_kv_heads")
    with pytest.raises(ConfigError, match=r"attention\.n_head_kv. Did you mean .*'n_kv_heads'"):
        ModelConfig.from_dict(d)
    d = _cfg_dict()
    d["d_modle"] = 3
    with pytest.raises(ConfigError, match="d_modle. Did you mean .*'d_model'"):
        ModelConfig.from_dict(d)


@pytest.mark.parametrize(("path", "value", "match"), [
    (("d_model",), "32", r"d_model must be an int, got '32' \(str\)"),
    (("d_model",), True, "d_model must be an int"),
    (("n_ctx",), 32.0, "n_ctx must be an int"),
    (("parallel_attn_mlp",), "false", "parallel_attn_mlp must be true or false"),
    (("attention", "qkv_bias"), "false", r"attention\.qkv_bias must be true or false"),
    (("attention", "n_heads"), 2.5, r"attention\.n_heads must be an int"),
    (("norm", "eps"), float("nan"), r"norm\.eps must be a finite number"),
    (("positional", "rotary_base"), -1.0, "rotary_base .* must be a finite number > 1"),
    (("positional", "rotary_base"), 0, "rotary_base"),
    (("d_vocab_out",), 0, "d_vocab_out must be a positive int or None"),
    (("d_vocab_out",), -5, "d_vocab_out"),
    (("attention", "scale"), -0.1, r"attention\.scale must be > 0"),
    (("mlp", "act"), "tanh", r"mlp\.act must be one of"),
    (("attention",), [1, 2], r"attention must be .*AttentionConfig"),
    (("format_version",), "1", "format_version must be a positive int"),
])
def test_wrong_types_and_ranges_name_the_field(path, value, match):
    d = _cfg_dict()
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ConfigError, match=match):
        ModelConfig.from_dict(d)


def test_missing_required_and_not_a_dict():
    d = _cfg_dict()
    del d["attention"]["d_head"]
    with pytest.raises(ConfigError, match=r"missing required field\(s\) attention\.d_head"):
        ModelConfig.from_dict(d)
    with pytest.raises(ConfigError, match="JSON object"), ill_typed():
        ModelConfig.from_dict([1, 2])  # type: ignore[arg-type]


def test_direct_construction_checks_types_too():
    with pytest.raises(ConfigError, match="n_heads must be an int"), ill_typed():
        AttentionConfig(n_heads="4", d_head=8)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="rotary_base"):
        PositionalConfig(kind="rotary", rotary_base=float("inf"))


def test_train_config_from_dict():
    good = TrainConfig(steps=10, betas=(0.9, 0.98)).to_dict()
    assert TrainConfig.from_dict(good).betas == (0.9, 0.98)
    with pytest.raises(ConfigError, match="unknown TrainConfig field stepz.*'steps'"):
        TrainConfig.from_dict({**good, "stepz": 3})
    with pytest.raises(ConfigError, match="progress must be true or false"):
        TrainConfig.from_dict({**good, "progress": "false"})
    with pytest.raises(ConfigError, match="betas must be a list of 2 items"):
        TrainConfig.from_dict({**good, "betas": [0.9]})
    with pytest.raises(ConfigError, match="lr must be a finite number"):
        TrainConfig.from_dict({**good, "lr": "1e-3"})


def test_dictionary_and_grokking_configs():
    with pytest.raises(ConfigError, match=r"k must be an int, got '8'"):
        config_from_dict({"architecture": "topk", "d_in": 4, "d_sae": 8, "k": "8"})
    with pytest.raises(ConfigError, match="apply_b_dec_to_input must be true or false"):
        config_from_dict({"architecture": "relu", "d_in": 4, "d_sae": 8, "apply_b_dec_to_input": "false"})
    with pytest.raises(ConfigError, match="'architecture' must be a string"):
        config_from_dict({"architecture": 3, "d_in": 4, "d_sae": 8})
    good = GrokkingConfig().to_dict()
    assert GrokkingConfig.from_dict(good) == GrokkingConfig()
    with pytest.raises(ConfigError, match="unknown GrokkingConfig field"):
        GrokkingConfig.from_dict({**good, "modulus": 7})
