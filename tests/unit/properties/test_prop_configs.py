"""Configs from dicts: any edit of a valid dict either builds a config or raises ``ConfigError`` naming a
field (never a TypeError, KeyError or a beartype error)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mechscope.dictionaries.registry import config_from_dict
from mechscope.dictionaries.train.config import TrainerConfig
from mechscope.errors import ConfigError
from mechscope.experiments.grokking.config import GrokkingConfig
from mechscope.models.config import ModelConfig
from mechscope.train.config import TrainConfig
from mechscope.validation import build
from tests.helpers import tiny_cfg

from .strategies import JSON_VALUES, call, fast, mutated

MODEL_DICTS = [tiny_cfg(k).to_dict() for k in ("gpt2", "neox", "llama", "attn_only")]
DICT_CONFIGS = [{"architecture": "topk", "d_in": 8, "d_sae": 16, "k": 4, "hook_name": "blocks.0.hook_resid_post"},
                {"architecture": "relu", "d_in": 8, "d_sae": 16, "l1_coefficient": 1.0},
                {"architecture": "jumprelu", "d_in": 8, "d_sae": 16},
                {"architecture": "transcoder", "d_in": 8, "d_sae": 16, "d_out": 8}]


def _named(msg: str, touched: list[str], fields: set[str]) -> bool:
    return any(t in msg for t in touched) or any(f in msg for f in fields)


@fast(100)
@given(st.sampled_from(MODEL_DICTS).flatmap(mutated))
def test_model_config_from_dict(case) -> None:
    d, touched = case
    cfg, msg = call(lambda: ModelConfig.from_dict(d))
    if msg is None:
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg  # what builds round-trips
    else:
        fields = {"attention", "mlp", "norm", "positional", "format_version", "d_model", "n_ctx", "d_vocab",
                  "n_layers", "n_heads", "d_head", "rotary_dim", "d_mlp"}
        assert _named(msg, touched, fields), msg


@fast(40)
@given(JSON_VALUES)
def test_model_config_from_anything(value) -> None:
    call(lambda: ModelConfig.from_dict(value if isinstance(value, dict) else {"attention": value}))


@fast(100)
@given(mutated(TrainConfig(steps=10, grad_clip=1.0, eval_every=2).to_dict()))
def test_train_config_from_dict(case) -> None:
    d, touched = case
    cfg, msg = call(lambda: TrainConfig.from_dict(d))
    if msg is None:
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    else:
        assert any(t in msg for t in touched) or "TrainConfig" in msg or any(f in msg for f in d), msg


@fast(80)
@given(st.sampled_from(DICT_CONFIGS).flatmap(mutated))
def test_dictionary_config_from_dict(case) -> None:
    d, _ = case
    cfg, msg = call(lambda: config_from_dict(d))
    if msg is None:
        assert config_from_dict(cfg.to_dict()) == cfg


@fast(40)
@given(mutated({"total_steps": 10, "lr": 1e-3, "grad_clip_norm": 1.0, "out_dir": None, "precision": "float32"}))
def test_trainer_config(case) -> None:
    d, _ = case
    call(lambda: build(TrainerConfig, d))


@fast(40)
@given(mutated(GrokkingConfig().to_dict()))
def test_grokking_config(case) -> None:
    d, _ = case
    call(lambda: GrokkingConfig.from_dict(d))


def test_config_error_is_what_the_property_sees() -> None:
    _, msg = call(lambda: ModelConfig.from_dict({**MODEL_DICTS[0], "d_modle": 3}))
    assert msg is not None and "d_model" in msg
    assert issubclass(ConfigError, Exception)
