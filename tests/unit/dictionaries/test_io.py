"""Save -> load is exact in our format and SAELens's layout; bad files raise clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mechscope.dictionaries import io
from mechscope.errors import ConfigError, ModelFileError, ShapeError

from .conftest import D_IN, build

X = torch.randn(5, D_IN)
ALL = ["relu", "topk", "batchtopk", "jumprelu", "gated", "transcoder", "crosscoder"]


def _input(arch: str) -> torch.Tensor:
    return torch.randn(5, 3, D_IN) if arch == "crosscoder" else X


@pytest.mark.parametrize("arch", ALL)
def test_own_format_round_trip_exact(arch: str, tmp_path: Path) -> None:
    d = build(arch, hook_name="blocks.1.hook_resid_post", model_name="tiny")
    d.with_config(input_scale=1.5, output_scale=1.5 if arch != "transcoder" else 0.5)
    io.save(d, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["format_version"] == io.FORMAT_VERSION
    e = io.load(tmp_path)
    assert type(e) is type(d) and e.cfg == d.cfg
    for (n, a), (_, b) in zip(d.state_dict().items(), e.state_dict().items()):
        assert torch.equal(a, b), n
    x = _input(arch)
    assert torch.equal(d(x).recons, e(x).recons)


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu", "gated", "transcoder"])
def test_saelens_round_trip_exact(arch: str, tmp_path: Path) -> None:
    d = build(arch, hook_name="blocks.1.hook_resid_post", model_name="tiny")
    io.save_saelens(d, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == {"relu": "standard", "transcoder": "skip_transcoder"}.get(arch, arch)
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post" and cfg["normalize_activations"] == "none"
    from safetensors.torch import load_file

    keys = set(load_file(tmp_path / "sae_weights.safetensors"))
    assert {"W_enc", "W_dec", "b_dec"} <= keys
    e = io.load_saelens(tmp_path)
    for n, a in d.state_dict().items():
        assert torch.equal(a, e.state_dict()[n]), n
    assert e.cfg.hook_name == d.cfg.hook_name


def test_saelens_export_folds_input_scale(tmp_path: Path) -> None:
    d = build("jumprelu").with_config(input_scale=3.0, output_scale=3.0)
    io.save_saelens(d, tmp_path)
    e = io.load(tmp_path)  # detects cfg.json
    assert e.cfg.input_scale == 1.0
    torch.testing.assert_close(e(X).recons, d(X).recons)


def test_batchtopk_exports_as_jumprelu(tmp_path: Path) -> None:
    d = build("batchtopk")
    d.threshold.fill_(0.3)
    io.save_saelens(d, tmp_path)
    e = io.load_saelens(tmp_path)
    assert e.cfg.architecture == "jumprelu"
    torch.testing.assert_close(e(X).acts, d(X).acts)


def test_crosscoder_has_no_saelens_layout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SAELens has no 'crosscoder'"):
        io.save_saelens(build("crosscoder"), tmp_path)


def test_mismatched_d_in_and_hook_rejected(tmp_path: Path) -> None:
    io.save(build("relu", hook_name="blocks.0.hook_resid_pre"), tmp_path)
    with pytest.raises(ShapeError, match="d_in=6"):
        io.load(tmp_path, d_in=7)
    with pytest.raises(ConfigError, match="blocks.0.hook_resid_pre"):
        io.load(tmp_path, hook_name="blocks.1.hook_resid_pre")


def test_weights_not_matching_config(tmp_path: Path) -> None:
    io.save(build("relu"), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["config"]["d_in"] = D_IN + 2
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="has shape .* but the config"):
        io.load(tmp_path)


def test_corrupted_files(tmp_path: Path) -> None:
    io.save(build("topk"), tmp_path)
    weights = tmp_path / "dictionary.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        io.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        io.load(tmp_path)
    with pytest.raises(ModelFileError, match="is not a directory"):
        io.load(tmp_path / "nope")


def test_unknown_architecture_and_future_version(tmp_path: Path) -> None:
    io.save(build("relu"), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["config"]["architecture"] = "relu2"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="Did you mean relu"):
        io.load(tmp_path)
    cfg["format_version"] = 99
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="format_version 99"):
        io.load(tmp_path)
