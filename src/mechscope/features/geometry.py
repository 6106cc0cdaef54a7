"""The geometry of a feature set: a 2-D map of its write directions and clusters by decoder cosine.

Directions are normalised to unit length first, so both the map and the clusters see cosine geometry
(the scale of a decoder row is not a property of the feature's meaning). The map is scikit-learn's PCA
(exact SVD; fast, deterministic, the default, computed by every harvest) or t-SNE (cosine metric, PCA init;
seconds to minutes, on request). Clusters are k-means on the unit directions (for unit vectors the
squared Euclidean distance is ``2 - 2 cos``, so this is spherical k-means up to the centroid norm).
The result is stored in the ``geometry`` table (one row per feature: ``x, y, cluster, method``) and shown by
the web app's ``/geometry/{dictionary}`` page and ``/api/geometry/{dictionary}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float
from torch import Tensor

from mechscope.errors import ConfigError

METHODS = ("pca", "tsne")
N_CLUSTERS = 8
"""Clusters a harvest stores by default."""


@dataclass
class FeatureMap:
    """Per-feature 2-D coordinates and cluster ids."""

    xy: np.ndarray
    """``[F 2]`` coordinates."""
    cluster: np.ndarray
    """``[F]`` cluster id in ``[0, n_clusters)``."""
    method: str


def decoder_map(directions: Float[Tensor, "f d"], *, method: str = "pca", n_clusters: int = 8,
                seed: int = 0) -> FeatureMap:
    """2-D map (``method``: pca | tsne) and k-means clusters of the unit write directions (module docstring)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    if method not in METHODS:
        raise ConfigError(f"map method must be one of {', '.join(METHODS)}, got {method!r}")
    n = int(directions.shape[0])
    if n < 3:
        raise ConfigError(f"a feature map needs at least 3 features, got {n}")
    if not 1 <= n_clusters <= n:
        raise ConfigError(f"n_clusters must be in [1, {n}] (the number of features), got {n_clusters}")
    unit = directions.detach().double()
    unit = (unit / unit.norm(dim=1, keepdim=True).clamp_min(1e-12)).cpu().numpy()
    if method == "pca":
        xy = PCA(n_components=2, svd_solver="full").fit_transform(unit)
    else:
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, metric="cosine", init="pca", perplexity=min(30.0, (n - 1) / 3),
                  random_state=seed).fit_transform(unit)
    labels = KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit_predict(unit)
    return FeatureMap(np.asarray(xy, dtype=np.float64), np.asarray(labels, dtype=np.int64), method)


def store(db: Any, dictionary: str, fmap: FeatureMap) -> None:
    """Replace the stored map of ``dictionary`` (one transaction)."""
    rows = [(dictionary, i, float(x), float(y), int(c), fmap.method)
            for i, ((x, y), c) in enumerate(zip(fmap.xy.tolist(), fmap.cluster.tolist(), strict=True))]
    with db.transaction():
        db.execute("DELETE FROM geometry WHERE dictionary = ?", (dictionary,))
        db.executemany("INSERT INTO geometry (dictionary, feature, x, y, cluster, method) VALUES (?, ?, ?, ?, ?, ?)",
                       rows)


def cluster_summary(rows: list[dict[str, Any]], explanations: dict[int, str], n_members: int = 8) -> list[dict[str, Any]]:
    """Per cluster: its size and its first members (by id) with their explanations, largest cluster first."""
    by: dict[int, list[int]] = {}
    for r in rows:
        by.setdefault(int(r["cluster"]), []).append(int(r["feature"]))
    out = [{"cluster": c, "size": len(m), "members": [{"feature": f, "explanation": explanations.get(f)}
                                                      for f in sorted(m)[:n_members]]} for c, m in by.items()]
    return sorted(out, key=lambda c: (-c["size"], c["cluster"]))


__all__ = ["FeatureMap", "METHODS", "decoder_map", "store", "cluster_summary"]
