"""A tiny width x tokens sweep runs end to end (train, evaluate, fit, match latents) and the CLI fits its results."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mechscope.activations.store import ActivationStore
from mechscope.cli.main import app
from mechscope.experiments.dictionaries import load_dictionary_dir
from mechscope.experiments.scaling import run_sweep, splits

from . import workers as w


def test_tiny_sweep_and_cli(tmp_path: Path) -> None:
    src = w.source()
    src.harvest(tmp_path / "store", 600, shard_rows=200, progress=False)
    held = ActivationStore.open(tmp_path / "store").read_shard(2)[w.HOOKS[0]][:150]
    rows = run_sweep(tmp_path / "store", tmp_path / "sweep", held, widths=[8, 32], tokens=[64, 128, 256], k=2,
                     batch_size=32, lr=1e-2, progress=False)
    assert len(rows) == 6 and {r["width"] for r in rows} == {8, 32}
    assert all(0 < r["loss"] < 1.5 and 0 < r["l0"] <= 2 for r in rows), rows
    rerun = run_sweep(tmp_path / "store", tmp_path / "sweep", held, widths=[8], tokens=[64], k=2, batch_size=32)
    assert rerun[0]["loss"] == rows[0]["loss"]  # reused, not retrained
    small, large = (load_dictionary_dir(tmp_path / "sweep" / f"w{n}-t256") for n in (8, 32))
    sp = splits(small, large, held, threshold=0.3)
    assert sp["n_small"] == 8 and sp["n_large"] == 32
    assert sum(i * c for i, c in enumerate(sp["split_histogram"])) == 32 - sp["unmatched_large"]
    assert sp["families"][0]["n_children"] == max(f["n_children"] for f in sp["families"])
    res = CliRunner().invoke(app, ["dict", "scaling", "--results", str(tmp_path / "sweep" / "results.json"),
                                   "--bootstrap", "5", "--json", "--figure", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n_runs"] == 6 and out["d_in"] == 32 and "alpha_ci" in out["surface"]
    assert (tmp_path / "s.png").stat().st_size > 1000
    run_sweep(tmp_path / "store", tmp_path / "seeded", held, widths=[8, 16], tokens=[32], k=2, batch_size=32,
              progress=False, seed_per_width=True)
    assert [load_dictionary_dir(tmp_path / "seeded" / f"w{n}-t32").cfg.seed for n in (8, 16)] == [8, 16]
    assert small.cfg.seed == large.cfg.seed == 0
    res = CliRunner().invoke(app, ["dict", "scaling"])
    assert res.exit_code == 2 and "--store" in res.output
