"""CLI argument parsing: any argv built from the real commands and options with random values exits 0 or
2 with a one-line ``error:`` message — never a traceback (``SystemExit`` is the only exception)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from mechscope.cli.main import app
from tests.helpers import tiny_model

from .strategies import fast

MODEL_DIR = Path(tempfile.mkdtemp(prefix="mechscope-cli-prop-")) / "m"
tiny_model("attn_only").save(MODEL_DIR)
runner = CliRunner()

VALUES = st.one_of(st.integers(-3, 5).map(str), st.sampled_from(["0", "-1", "1.5", "abc", "", "1e9", "nan", "inf",
                                                                 "0.5", "--json", str(MODEL_DIR), "/nonexistent"]))
# commands whose validation happens before any long computation, with the options they take
COMMANDS = {
    ("info",): ["--pos", "--json"],
    ("generate",): ["--top-k", "--top-p", "--temperature", "--max-new-tokens", "--seed"],
    ("heads",): ["--half-len", "--batch", "--top", "--threads", "--seed", "--json"],
    ("patch", "run"): ["--clean", "--corrupted", "--answer", "--wrong", "--sweep", "--direction", "--method",
                       "--model"],
    ("dict", "eval"): ["--batch-size", "--n-seq", "--seq-len", "--split"],
    ("grokking", "analyze"): ["--json", "--history"],
    ("induction", "analyze"): ["--json", "--threads"],
}
FLAGS = {"--json", "--history"}


@st.composite
def argvs(draw) -> list[str]:
    cmd = draw(st.sampled_from(sorted(COMMANDS)))
    argv = list(cmd)
    if cmd[0] in ("info", "generate", "heads"):
        argv.append(draw(st.sampled_from([str(MODEL_DIR), "no-such-model", "", "/nonexistent/dir"])))
    if cmd[0] == "generate":
        argv.append(draw(st.sampled_from(["w", "", "hello world"])))
    if cmd in (("dict", "eval"), ("grokking", "analyze"), ("induction", "analyze")):
        argv.append(draw(st.sampled_from([str(MODEL_DIR), "/nonexistent/run", str(MODEL_DIR.parent)])))
    for opt in draw(st.lists(st.sampled_from(COMMANDS[cmd]), max_size=4, unique=True)):
        argv += [opt] if opt in FLAGS else [opt, draw(VALUES)]
    if draw(st.booleans()):
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(["--bogus", "-x", "--json"])))
    return argv


@fast(60)
@given(argvs())
def test_cli_never_tracebacks(argv: list[str]) -> None:
    res = runner.invoke(app, argv)
    assert res.exit_code in (0, 2), (argv, res.exit_code, res.output[-500:], repr(res.exception))
    if res.exception is not None:
        assert isinstance(res.exception, SystemExit), (argv, repr(res.exception))
    if res.exit_code == 2:
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and len(errors[0]) > 20, (argv, res.stderr)
