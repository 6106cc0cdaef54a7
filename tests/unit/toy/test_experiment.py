"""The case study end to end on a micro configuration: pictures written, JSON summary, CLI output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mechscope.experiments.superposition import config as exp
from mechscope.toy.and_task import AndTaskConfig
from mechscope.toy.dictionary_check import DictionaryCheckConfig
from mechscope.toy.superposition import ToyTrainConfig


def _micro() -> exp.SuperpositionExperimentConfig:
    t = ToyTrainConfig(steps=30, batch_size=32, lr=1e-2, progress=False)
    return exp.SuperpositionExperimentConfig(
        intro_sparsities=(0.0, 0.9), intro_train=t, phase_grid=3, phase_train=t, geom_n_features=8,
        geom_d_hidden=3, geom_points=3, geom_max_inv_density=10.0, geom_train=t, polytope_train=t,
        and_task=AndTaskConfig(n_vars=4, widths=(2, 6), seeds_per_width=1, steps=30, progress=False),
        dictionary=DictionaryCheckConfig(n_features=6, d_hidden=2, toy_train=t, sae_steps=5, sae_batch_size=16,
                                         k=2))


def test_cli_quick_run_prints_json_and_writes_pictures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One micro run through the CLI (rendering is the slow part, so one run checks everything)."""
    from mechscope.cli.superposition import app

    torch.set_num_threads(1)
    monkeypatch.setattr(exp.SuperpositionExperimentConfig, "quick", classmethod(lambda cls, seed=0: _micro()))
    out = CliRunner().invoke(app, ["run", "--out", str(tmp_path), "--json", "--quick"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output)
    assert summary["config"] == "quick" and "and_task" in summary
    assert json.loads((tmp_path / "summary.json").read_text())["phase_diagram"] == summary["phase_diagram"]
    assert set(summary["features_represented_per_sparsity"]) == {"0", "0.9"}
    assert len(summary["phase_diagram"]["grid_density_by_importance"]) == 3
    assert len(summary["dimensions_per_feature"]["values"]) == 3
    assert set(summary["and_task"]["mse"]) == {"2", "6"}
    assert len(summary["figures"]) == 7
    dc = summary["dictionary_check"]
    assert {"topk", "relu", "random_directions_mean_max_cosine"} <= set(dc)
    assert -1 <= dc["topk"]["mean_max_cosine"] <= 1
    for path in summary["figures"].values():
        assert Path(path).read_bytes()[:4] == b"\x89PNG"


def test_bad_experiment_config_rejected() -> None:
    from mechscope.errors import ConfigError

    with pytest.raises(ConfigError, match="geom_d_hidden"):
        exp.SuperpositionExperimentConfig(geom_n_features=4, geom_d_hidden=4)
