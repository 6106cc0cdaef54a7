"""The SAELens loader names a missing or ill-typed ``cfg.json`` field (the string "false" is not True)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mechscope.dictionaries import io
from mechscope.errors import ConfigError, ModelFileError

from .conftest import build


def _saved(tmp_path: Path, arch: str = "relu") -> dict:
    io.save_saelens(build(arch, hook_name="blocks.1.hook_resid_post"), tmp_path)
    return json.loads((tmp_path / "cfg.json").read_text())


def _rewrite(tmp_path: Path, cfg: dict) -> None:
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))


def test_string_false_is_not_true(tmp_path: Path) -> None:
    cfg = _saved(tmp_path)
    _rewrite(tmp_path, {**cfg, "apply_b_dec_to_input": "false"})
    with pytest.raises(ModelFileError, match=r"'apply_b_dec_to_input' must be true or false, got 'false' \(str\)"):
        io.load_saelens(tmp_path)
    _rewrite(tmp_path, {**cfg, "apply_b_dec_to_input": False})
    assert io.load_saelens(tmp_path).cfg.apply_b_dec_to_input is False


@pytest.mark.parametrize(("change", "match"), [
    ({"d_in": None}, "required field 'd_in' is missing"),
    ({"d_sae": "8"}, r"'d_sae' must be a positive int, got '8' \(str\)"),
    ({"d_sae": 8.0}, r"'d_sae' must be a positive int, got 8.0 \(float\)"),
    ({"d_sae": True}, "'d_sae' must be a positive int"),
    ({"d_in": -4}, "'d_in' must be a positive int, got -4"),
    ({"metadata": "x"}, "'metadata' must be an object"),
    ({"architecture": 7}, "'architecture' must be a string"),
    ({"dtype": 32}, "'dtype' must be a string"),
])
def test_missing_and_ill_typed_fields_are_named(tmp_path: Path, change: dict, match: str) -> None:
    cfg = _saved(tmp_path)
    for k, v in change.items():
        if v is None:
            cfg.pop(k)
        else:
            cfg[k] = v
    _rewrite(tmp_path, cfg)
    with pytest.raises(ModelFileError, match=match):
        io.load_saelens(tmp_path)


def test_topk_needs_k_and_unknown_dtype_is_refused(tmp_path: Path) -> None:
    cfg = _saved(tmp_path, "topk")
    _rewrite(tmp_path, {k: v for k, v in cfg.items() if k != "k"})
    with pytest.raises(ModelFileError, match="required field 'k' is missing"):
        io.load_saelens(tmp_path)
    _rewrite(tmp_path, {**cfg, "dtype": "int8"})
    with pytest.raises(ConfigError, match="dtype 'int8' is not supported"):
        io.load_saelens(tmp_path)
    _rewrite(tmp_path, {**cfg, "dtype": "torch.float16"})
    assert io.load_saelens(tmp_path).cfg.dtype == "float32"  # read losslessly into float32 parameters
