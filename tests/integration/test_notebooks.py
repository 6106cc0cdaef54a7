"""The notebooks in ``notebooks/`` execute from top to bottom (tiny settings) and show their key outputs.

Each runs in a fresh ipykernel of *this* interpreter (a throwaway kernelspec, so the venv's own ``python3``
spec, whose ``argv`` is a bare ``python``, cannot pick another interpreter), with
``MECHSCOPE_NOTEBOOK_QUICK=1`` and one torch thread. A notebook ends by printing ``SUMMARY {json}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
KERNEL = "mechscope-notebook-test"


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec running ipykernel on ``sys.executable``, found first through ``JUPYTER_PATH``."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mechscope test", "language": "python",
        "env": {"MECHSCOPE_NOTEBOOK_QUICK": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def execute(name: str, kernel: str, cwd: Path) -> tuple[Any, dict[str, Any]]:
    """Run a notebook; return it (with outputs) and its parsed SUMMARY line."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name} is committed with outputs"
    nbclient.NotebookClient(nb, kernel_name=kernel, timeout=300, resources={"metadata": {"path": str(cwd)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream")
    lines = [ln for ln in text.splitlines() if ln.startswith("SUMMARY ")]
    assert len(lines) == 1, text[-2000:]
    return nb, json.loads(lines[0].removeprefix("SUMMARY "))


def rich(nb: Any, mime: str) -> list[str]:
    """Every ``mime`` payload among the notebook's display / execute-result outputs."""
    return [o["data"][mime] for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type in ("display_data", "execute_result") and mime in o.get("data", {})]


@pytest.mark.model
def test_tour_notebook_caches_patches_and_renders_results_inline(kernel: str, tmp_path: Path) -> None:
    nb, s = execute("01_tour.ipynb", kernel, tmp_path)
    html = rich(nb, "text/html")
    assert any(h.startswith("<p><b>ActivationCache</b>") for h in html)
    sweeps = [h for h in html if h.startswith("<p><b>SweepResult</b>")]
    assert len(sweeps) == 2 and all("data:image/png;base64," in h for h in sweeps)
    assert any('class="msattn"' in h for h in html)  # the attention view
    assert any(h.startswith("<p><b>EdgeScores</b> (eap)") for h in html) and s["n_edges"] > 10_000
    assert s["n_prompts"] == 4 and s["mean_logit_diff"] > 0  # SmolLM2 prefers the indirect object
    assert len(s["top_resid_site"]) == 2 and len(s["top_head"]) == 2


def test_dictionary_notebook_recovers_synthetic_features_above_chance(kernel: str, tmp_path: Path) -> None:
    nb, s = execute("02_dictionaries.ipynb", kernel, tmp_path)
    assert len(rich(nb, "image/png")) == 1
    assert s["steps"] == 300 and s["mean_max_cosine"] > s["random_mean_max_cosine"] + 0.2
    assert 0 <= s["fvu"] < 1 and set(s["toy_topk"]) == {"mean_max_cosine", "fvu"}


def test_grokking_notebook_trains_analyzes_and_draws(kernel: str, tmp_path: Path) -> None:
    nb, s = execute("03_grokking.ipynb", kernel, tmp_path)
    assert len(rich(nb, "image/png")) >= 3
    assert s["p"] == 23 and 0 < s["epochs"] <= 600 and s["train_acc"] == 1.0 and s["test_acc"] > 0.9
    assert s["epoch_train_100"] < s["epoch_test_99"]  # memorised first, generalised later
    assert len(s["key_frequencies"]) >= 1
