"""The recorded feature study of ``docs/features.md``: explain and score a random sample of SAE latents and of
MLP neurons of the same layer with the same explainer, and compare their scores.

    python -c "from mechscope.experiments.features import study; study('runs/features/smollm2.db')"
"""

from __future__ import annotations

import random
import statistics
from typing import Any

from mechscope.features.autointerp.clients import ChatClient
from mechscope.features.autointerp.run import explain_features, score_features
from mechscope.features.db import FeatureDB


def sample_features(db: FeatureDB, dictionary: str, n: int, seed: int = 0, min_density: float = 1e-3,
                    max_density: float = 0.2) -> list[int]:
    """``n`` random features of ``dictionary`` whose density lies in [min_density, max_density]."""
    rows = db.query("SELECT feature FROM features WHERE dictionary = ? AND density >= ? AND density <= ? "
                    "ORDER BY feature", (dictionary, min_density, max_density))
    ids = [r["feature"] for r in rows]
    return sorted(random.Random(seed).sample(ids, min(n, len(ids))))


def study(db_path: str, client: ChatClient | None = None, *, dictionaries: tuple[str, ...] = (
        "sae-l6", "neurons:blocks.6.mlp.hook_post"), n: int = 10, seed: int = 0, n_score: int = 10) -> dict[str, Any]:
    """Explain + score ``n`` sampled features of each dictionary; returns per-dictionary rows and means."""
    if client is None:
        import mechscope
        from mechscope.features.autointerp.clients import LocalChat

        client = LocalChat(mechscope.load("smollm2-135m").eval())
    db = FeatureDB.open(db_path)
    out: dict[str, Any] = {}
    for d in dictionaries:
        # neurons of a gated MLP are positive about half the time: sample them without the density cap
        feats = sample_features(db, d, n, seed, max_density=1.0 if d.startswith("neurons:") else 0.2)
        texts = explain_features(db, d, feats, client)
        scores = score_features(db, d, feats, client, n=n_score)
        rows: list[dict[str, Any]] = [{"feature": f, "explanation": texts[f], **scores.get(f, {})} for f in feats]
        det = [float(scores.get(f, {}).get("detection", 0.0)) for f in feats]
        fuzz = [float(scores.get(f, {}).get("fuzzing", 0.0)) for f in feats]
        out[d] = {"rows": rows, "mean_detection": statistics.mean(det), "mean_fuzzing": statistics.mean(fuzz)}
    return out


__all__ = ["study", "sample_features"]
