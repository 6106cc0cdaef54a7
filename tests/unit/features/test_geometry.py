"""Feature geometry: the decoder map and clusters (planted structure is recovered, scale-free, deterministic),
stored by the harvest, served as an escaped inline-SVG page and as JSON."""

from __future__ import annotations

import sqlite3
from urllib.parse import quote

import httpx
import pytest
import torch

from mechscope.errors import ConfigError
from mechscope.features.db import FeatureDB
from mechscope.features.geometry import cluster_summary, decoder_map
from mechscope.features.source import dictionary_features
from tests.unit.features import helpers
from tests.unit.features.escaping import DICT, inspect


def planted(n_groups: int = 3, per: int = 10, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, list[int]]:
    """Directions in ``n_groups`` tight cones around orthogonal axes, with random positive scales."""
    g = torch.Generator().manual_seed(seed)
    rows, labels = [], []
    for k in range(n_groups):
        axis = torch.zeros(d)
        axis[k] = 1.0
        for _ in range(per):
            scale = 0.1 + 5 * torch.rand((), generator=g)
            rows.append(scale * (axis + 0.05 * torch.randn(d, generator=g)))
            labels.append(k)
    return torch.stack(rows), labels


def same_partition(a: list[int], b: list[int]) -> bool:
    return all((a[i] == a[j]) == (b[i] == b[j]) for i in range(len(a)) for j in range(len(a)))


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_planted_clusters_are_recovered(method):
    dirs, truth = planted()
    m = decoder_map(dirs, method=method, n_clusters=3)
    assert m.xy.shape == (30, 2) and m.cluster.shape == (30,) and m.method == method
    assert same_partition(m.cluster.tolist(), truth)
    # on the map, every point is nearer its own group's centre than any other group's
    xy = torch.from_numpy(m.xy)
    centres = torch.stack([xy[[i for i, t in enumerate(truth) if t == k]].mean(0) for k in range(3)])
    assert torch.cdist(xy, centres).argmin(1).tolist() == truth


def test_map_is_deterministic_and_scale_free():
    dirs, _ = planted(seed=1)
    a = decoder_map(dirs, n_clusters=3)
    b = decoder_map(dirs * torch.linspace(0.5, 3.0, 30)[:, None], n_clusters=3)
    again = decoder_map(dirs, n_clusters=3)
    assert (a.cluster == again.cluster).all() and (a.xy == again.xy).all()
    assert (a.cluster == b.cluster).all()
    assert abs(a.xy - b.xy).max() < 1e-6  # float32 rounding of the scaled rows only


def test_bad_input_is_refused():
    dirs, _ = planted()
    with pytest.raises(ConfigError, match="pca, tsne"):
        decoder_map(dirs, method="umap")
    with pytest.raises(ConfigError, match="n_clusters"):
        decoder_map(dirs, n_clusters=0)
    with pytest.raises(ConfigError, match="at least 3"):
        decoder_map(dirs[:2])


def test_cluster_summary():
    rows = [{"feature": f, "cluster": c} for f, c in enumerate([1, 0, 1, 1, 2])]
    out = cluster_summary(rows, {2: "two"}, n_members=2)
    assert [(c["cluster"], c["size"]) for c in out] == [(1, 3), (0, 1), (2, 1)]
    assert out[0]["members"] == [{"feature": 0, "explanation": None}, {"feature": 2, "explanation": "two"}]


def test_harvest_stores_the_map(site):
    _, tmp = site
    db = FeatureDB.open(tmp / "f.db", read_only=True)
    rows = db.geometry(DICT)
    db.close()
    expected = decoder_map(dictionary_features(helpers.model(), helpers.dictionary(), DICT).directions,
                           n_clusters=8)
    assert [r["feature"] for r in rows] == list(range(24))
    assert [r["cluster"] for r in rows] == expected.cluster.tolist()
    assert max(abs(r["x"] - x) + abs(r["y"] - y) for r, (x, y) in zip(rows, expected.xy.tolist(), strict=True)) < 1e-9


def test_map_page_and_api(site):
    url, _ = site
    with httpx.Client(base_url=url, timeout=30) as c:
        api = c.get(f"/api/geometry/{quote(DICT, safe='')}").json()
        assert api["method"] == "pca" and api["feature"] == list(range(24)) and len(api["x"]) == 24
        assert sum(cl["size"] for cl in api["clusters"]) == 24 and len(api["clusters"]) == len(set(api["cluster"]))
        r = c.get(f"/geometry/{quote(DICT, safe='')}")
        assert r.status_code == 200 and "Content-Security-Policy" in r.headers
        doc = inspect(r.text)
        assert doc.tags.count("circle") == 24 and doc.tags.count("svg") == 1
        assert "script" not in doc.tags and doc.comments == []  # the explanations hold <script> and <!--
        assert "map-link" in c.get("/").text
        assert c.get("/geometry/nope").status_code == 404 and c.get("/api/geometry/nope").status_code == 404


def test_database_without_geometry_table(tmp_path):
    db = FeatureDB.open(tmp_path / "g.db")
    db.put_model("m", {})
    db.put_dictionary("d", "m", "h", "sae", 3, {})
    db.close()
    with sqlite3.connect(tmp_path / "g.db") as raw:  # a file from before the table existed
        raw.execute("DROP TABLE geometry")
    ro = FeatureDB.open(tmp_path / "g.db", read_only=True)
    assert not ro.has_geometry and ro.geometry("d") == []
    ro.close()
    rw = FeatureDB.open(tmp_path / "g.db")
    assert rw.has_geometry and rw.geometry("d") == []
    rw.close()
