"""Every CLI user error is one ``error: ...`` line on stderr and exit status 2, never a traceback; numbers
are validated before a model loads; ``patch`` group options before a sub-command are refused, not ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mechscope.cli.main import app
from tests.helpers import tiny_model

runner = CliRunner()


def _fails_cleanly(args: list[str], match: str) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (args, res.exit_code, res.output, res.exception)
    assert isinstance(res.exception, SystemExit), res.exception  # not an uncaught exception
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("loading ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    assert match in lines[0], lines[0]
    return lines[0]


PROMPT = ["--clean", "a b", "--corrupted", "a c", "--answer", " x", "--wrong", " y"]


@pytest.mark.parametrize(("args", "match"), [
    (["generate", "m", "hi", "--top-k", "0"], "--top-k"),
    (["generate", "m", "hi", "--top-k", "abc"], "--top-k"),
    (["generate", "m", "hi", "--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["generate", "m", "hi", "--top-p", "0"], "--top-p must be in (0, 1]"),
    (["generate", "m", "hi", "--temperature", "-1"], "--temperature"),
    (["heads", "m", "--half-len", "0"], "--half-len"),
    (["heads", "m", "--threads", "0"], "--threads"),
    (["heads", "m", "--top", "-3"], "--top"),
    (["dict", "eval", "d", "--batch-size", "0"], "--batch-size"),
    (["dict", "harvest", "--hooks", "h", "--tokens", "0", "--out", "o"], "--tokens"),
    (["induction", "train", "--out", "o", "--batch-size", "0"], "--batch-size"),
    (["induction", "analyze", "o", "--threads", "-2"], "--threads"),
    (["grokking", "train", "--out", "o", "--threads", "0"], "--threads"),
    (["info", "m", "--pos", "0"], "--pos"),
    (["patch", "run", *PROMPT, "--method", "exactly"], "--method must be one of exact, attribution"),
    (["patch", *PROMPT, "--method", "bogus"], "--method must be one of exact, attribution"),
    (["patch", "run", *PROMPT, "--sweep", "resid_pree"], "unknown sweep 'resid_pree'"),
    (["patch", "run", *PROMPT, "--direction", "sideways"], "--direction must be denoise or noise"),
    (["patch", "--model", "X", "run", *PROMPT], "--model given before the sub-command 'run'"),
    (["patch", "--sweep", "z", "ioi"], "--sweep given before the sub-command 'ioi'"),
    (["info", "no-such-model"], "Unknown model name"),
    (["info"], "Missing argument"),
    (["no-such-command"], "No such command"),
    (["--bogus", "info", "m"], "No such option"),
    (["grokking", "train", "--out", "o", "--preset", "bogus"], "--preset must be one of"),
])
def test_user_errors_are_one_line_exit_2(args: list[str], match: str) -> None:
    _fails_cleanly(args, match)


def test_errors_after_loading_a_model_are_one_line(tmp_path: Path) -> None:
    tiny_model("gpt2").save(tmp_path / "m")
    _fails_cleanly(["heads", str(tmp_path / "m"), "--half-len", "40"], "--half-len 40 needs a context")
    _fails_cleanly(["info", str(tmp_path / "nothing-here")], "does not exist")
    (tmp_path / "empty").mkdir()
    _fails_cleanly(["info", str(tmp_path / "empty")], "has no config.json")
    _fails_cleanly(["grokking", "analyze", str(tmp_path / "empty")], "error")
