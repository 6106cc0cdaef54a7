"""CLI wiring of `features` and the top-level `serve` / `serve-llm` commands: clear one-line errors (exit 2)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mechscope.cli.main import app
from tests.unit.features.escaping import DICT, nasty_db


def test_serve_refuses_a_public_address_and_a_foreign_db(tmp_path):
    nasty_db(tmp_path / "f.db", tmp_path / "s").close()
    r = CliRunner().invoke(app, ["serve", "--db", str(tmp_path / "f.db"), "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "--allow-remote" in r.output
    r = CliRunner().invoke(app, ["serve", "--db", str(tmp_path / "missing.db")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = CliRunner().invoke(app, ["serve", "--db", str(tmp_path / "f.db"), "--workers", "0"])
    assert r.exit_code == 2 and "--workers must be in [1, 64]" in r.output
    r = CliRunner().invoke(app, ["serve-llm", "x", "--host", "10.1.2.3"])
    assert r.exit_code == 2 and "--allow-remote" in r.output


def test_harvest_needs_exactly_one_feature_set(tmp_path):
    r = CliRunner().invoke(app, ["features", "harvest", "--db", str(tmp_path / "f.db"), "--neurons", "x",
                                 "--dictionary", str(tmp_path)])
    assert r.exit_code == 2 and "exactly one of --dictionary DIR or --neurons HOOK" in r.output


def test_show_lists_and_searches(tmp_path):
    nasty_db(tmp_path / "f.db", tmp_path / "s").close()
    r = CliRunner().invoke(app, ["features", "show", "--db", str(tmp_path / "f.db"), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["dictionaries"][0]["name"] == DICT
    r = CliRunner().invoke(app, ["features", "show", "--db", str(tmp_path / "f.db"), "--q", "pwned", "--limit", "3",
                                 "--json"])
    assert r.exit_code == 0 and len(json.loads(r.output)) == 3
    r = CliRunner().invoke(app, ["features", "show", "--db", str(tmp_path / "f.db"), "--dictionary", DICT,
                                 "--feature", "5", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["feature"] == 5
    r = CliRunner().invoke(app, ["features", "show", "--db", str(tmp_path / "f.db"), "--feature", "5"])
    assert r.exit_code == 2 and "--feature needs --dictionary" in r.output


def test_geometry_recomputes_the_map(tmp_path):
    from mechscope.features.db import FeatureDB
    from tests.unit.features import helpers

    nasty_db(tmp_path / "f.db", tmp_path / "s").close()
    mdir, ddir = helpers.save_tiny(tmp_path)
    base = ["features", "geometry", "--db", str(tmp_path / "f.db"), "--dictionary", DICT, "--model", str(mdir)]
    r = CliRunner().invoke(app, base + ["--clusters", "3", "--json"])
    assert r.exit_code == 2 and "--weights" in r.output  # the test harvest recorded no path
    r = CliRunner().invoke(app, base + ["--weights", str(ddir), "--method", "tsne", "--clusters", "3", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])  # stderr's "loading ..." line comes first
    assert out["features"] == 24 and sum(out["cluster_sizes"].values()) == 24 and len(out["cluster_sizes"]) == 3
    db = FeatureDB.open(tmp_path / "f.db", read_only=True)
    assert {r["method"] for r in db.geometry(DICT)} == {"tsne"} and {r["cluster"] for r in db.geometry(DICT)} == {0, 1, 2}
    db.close()
    r = CliRunner().invoke(app, ["features", "geometry", "--db", str(tmp_path / "f.db"), "--dictionary", "nope"])
    assert r.exit_code == 2 and "no feature set 'nope'" in r.output
    r = CliRunner().invoke(app, base + ["--weights", str(ddir), "--method", "umap"])
    assert r.exit_code == 2 and "pca, tsne" in r.output


@pytest.mark.slow  # two server processes importing mechscope: ~30 s on the shared machine
def test_serve_with_two_workers(tmp_path):
    import os
    import subprocess
    import sys
    import time

    import httpx

    from mechscope.web.server import free_port

    nasty_db(tmp_path / "f.db", tmp_path / "s").close()
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "mechscope.cli.main", "serve", "--db", str(tmp_path / "f.db"),
                             "--port", str(port), "--workers", "2"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                rows = httpx.get(f"http://127.0.0.1:{port}/api/features", params={"limit": 3}, timeout=5).json()
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.3)
        assert len(rows) == 3 and rows[0]["dictionary"] == DICT
        head = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert head.status_code == 200 and "sandbox" not in head.headers["content-security-policy"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert b"Started parent process" in err and err.count(b"Started server process") == 2
