"""Packaging: the wheel builds from a clean copy of the source, installs into a fresh virtual environment
(``--no-deps``; the already-installed dependencies are reached through a ``.pth`` line, never mechscope
itself), and ``mechscope --help`` runs from the installed console script.

Slow-marked (about 15-40 s: build, venv, install, two interpreter starts); run with ``make test-slow`` or
``pytest -m slow tests/integration/test_packaging.py``. Figures are in docs/packaging.md.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_the_cli_runs(tmp_path: Path) -> None:
    src = tmp_path / "src-copy"  # build from a copy: setuptools writes build/ and *.egg-info next to the source
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                  "-w", str(tmp_path / "dist"), str(src)])
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("mechscope-*.whl")

    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    installed = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)])
    assert installed.returncode == 0, installed.stderr[-2000:]
    # then the dependencies (torch, typer, ...) of the current environment, after the fresh site-packages; the
    # current environment's editable mechscope is a .pth *inside* that directory, which is not processed
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    where = _run([str(py), "-c", "import mechscope; print(mechscope.__file__, mechscope.__version__)"],
                 cwd=tmp_path)
    assert where.returncode == 0, where.stderr[-2000:]
    assert where.stdout.startswith(str(site)), where.stdout  # the installed wheel, not the source tree
    helped = _run([str(env_dir / "bin" / "mechscope"), "--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr[-2000:]
    for command in ("info", "generate", "patch", "dict", "grokking", "induction", "heads"):
        assert command in helped.stdout, command
    bad = _run([str(env_dir / "bin" / "mechscope"), "info", "no-such-model"], cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: ")
