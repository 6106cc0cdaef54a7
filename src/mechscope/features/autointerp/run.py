"""Explain and score many features of a dictionary and store the results in the feature database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mechscope.errors import ConfigError
from mechscope.features.autointerp.clients import ChatClient
from mechscope.features.autointerp.explain import explain
from mechscope.features.autointerp.scoring import score_feature
from mechscope.features.db import FeatureDB


def _feature(db: FeatureDB, dictionary: str, i: int) -> dict[str, Any]:
    feat = db.feature(dictionary, i)
    if feat is None:
        raise ConfigError(f"no feature {i} of dictionary {dictionary!r} in {db.where}")
    return feat


def explain_features(db: FeatureDB, dictionary: str, features: Sequence[int], client: ChatClient, *,
                     progress: bool = True) -> dict[int, str]:
    """Explain each feature with ``client``; each explanation is committed as soon as it is made."""
    from tqdm.auto import tqdm

    out = {}
    for i in tqdm(features, desc="explain", disable=not progress):
        text = explain(client, _feature(db, dictionary, i))
        if text:
            with db.transaction():
                db.put_explanation(dictionary, i, client.name, text)
        out[i] = text
    return out


def score_features(db: FeatureDB, dictionary: str, features: Sequence[int], client: ChatClient, *,
                   explainer: str | None = None, n: int = 10, progress: bool = True) -> dict[int, dict[str, float]]:
    """Score the stored explanation (by ``explainer``, default the newest) of each feature with ``client``."""
    from tqdm.auto import tqdm

    out: dict[int, dict[str, float]] = {}
    for i in tqdm(features, desc="score", disable=not progress):
        feat = _feature(db, dictionary, i)
        exps = [e for e in feat["explanations"] if explainer is None or e["explainer"] == explainer]
        if not exps:
            continue
        scores = score_feature(client, db, dictionary, feat, exps[0]["text"], n=n)
        with db.transaction():
            for s in scores:
                db.put_score(dictionary, i, exps[0]["explainer"], s.method, s.value, s.n,
                             s.details | {"scorer": client.name})
        out[i] = {s.method: s.value for s in scores}
    return out


__all__ = ["explain_features", "score_features"]
