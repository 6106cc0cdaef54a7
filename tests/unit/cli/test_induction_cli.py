"""`mechscope induction train`: its option defaults are InductionConfig's (the recorded run), bad values are clear."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

from typer.testing import CliRunner

from mechscope.cli.induction import app, train_cmd
from mechscope.experiments.induction.config import InductionConfig


def test_cli_defaults_equal_the_config_defaults() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(InductionConfig)}
    shared = 0
    for name, param in inspect.signature(train_cmd).parameters.items():
        if name not in fields:
            continue
        default = param.default.default
        want = fields[name]
        if name == "vocab_size":  # the CLI spells "whole vocabulary" as 0
            want = want or 0
        assert default == want, (name, default, want)
        shared += 1
    assert shared >= 18


def test_bad_pos_init_is_one_clear_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "run"), "--pos-init", "zeros"])
    assert res.exit_code == 2
    assert "pos_init" in res.output and "sinusoidal" in res.output
