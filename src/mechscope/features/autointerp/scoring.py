"""Scoring an explanation (delphi's detection and fuzzing scorers), with balanced accuracy as the score.

* **detection**: the scorer model sees the explanation and one snippet and answers 1 if the described feature
  is present, else 0. Positives are the feature's own examples (top and quantile samples), negatives are
  examples of *other* features on which this feature has no recorded activation (the database stores no
  random contexts; at the densities of a sparse dictionary they are almost surely non-activating).
* **fuzzing**: the scorer sees an activating snippet with tokens marked ``<< >>`` and answers 1 if the marks
  sit on tokens the explanation describes. Correct markings put the marks on the truly active tokens,
  fuzzed ones on as many randomly chosen inactive tokens of the same snippet.

Balanced accuracy is 1 for a perfect explanation and 0.5 for one unrelated to the feature (chance).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mechscope.features.autointerp.clients import ChatClient, Message
from mechscope.features.autointerp.explain import mark

DETECTION = ("A neural-network feature is described as: {explanation}\nText: {text}\nIs this feature present "
             "anywhere in the text? Answer with a single digit: 1 for yes, 0 for no.")
FUZZING = ("A neural-network feature is described as: {explanation}\nIn the text below some tokens are marked "
           "<<like this>>.\nText: {text}\nDo the marked tokens match the description? Answer with a single "
           "digit: 1 for yes, 0 for no.")


@dataclass(frozen=True)
class Score:
    """Result of one scorer on one explanation."""

    method: str
    """``detection`` or ``fuzzing``."""
    value: float
    """Balanced accuracy in [0, 1] (0.5 = chance)."""
    n: int
    """Trials asked."""
    details: dict[str, Any]
    """Confusion counts."""


def parse_answer(reply: str) -> int:
    """1 / 0 from a reply ("1", "yes", "Answer: 0", ...); unparseable counts as 0."""
    m = re.search(r"[01]|\byes\b|\bno\b", reply.lower())
    return 1 if m and m.group(0) in ("1", "yes") else 0


def _balanced(truth: Sequence[int], said: Sequence[int]) -> tuple[float, dict[str, int]]:
    tp = sum(1 for t, s in zip(truth, said, strict=True) if t and s)
    tn = sum(1 for t, s in zip(truth, said, strict=True) if not t and not s)
    pos, neg = sum(truth), len(truth) - sum(truth)
    parts = [x for x in ((tp / pos) if pos else None, (tn / neg) if neg else None) if x is not None]
    return (sum(parts) / len(parts) if parts else 0.0), {"tp": tp, "tn": tn, "positives": pos, "negatives": neg}


def _ask(client: ChatClient, template: str, explanation: str, text: str) -> int:
    msg: list[Message] = [{"role": "user", "content": template.format(explanation=explanation, text=text)}]
    return parse_answer(client.chat(msg, max_tokens=4))


def detection(client: ChatClient, explanation: str, positives: Sequence[dict[str, Any]],
              negatives: Sequence[dict[str, Any]]) -> Score:
    """Detection score: can the explanation tell the feature's snippets from others?"""
    items = [(1, e) for e in positives] + [(0, e) for e in negatives]
    said = [_ask(client, DETECTION, explanation, "".join(e["tokens"])) for _, e in items]
    value, counts = _balanced([t for t, _ in items], said)
    return Score("detection", value, len(items), counts)


def fuzzing(client: ChatClient, explanation: str, examples: Sequence[dict[str, Any]], seed: int = 0) -> Score:
    """Fuzzing score: can the explanation tell correctly marked snippets from randomly marked ones?"""
    rng = random.Random(seed)
    truth, said = [], []
    for i, e in enumerate(examples):
        active = [j for j, a in enumerate(e["acts"]) if a > 0]
        inactive = [j for j, a in enumerate(e["acts"]) if a <= 0]
        if not active:
            continue
        if i % 2 == 0 or len(inactive) < len(active):
            text, t = mark(e["tokens"], e["acts"]), 1
        else:
            fake = set(rng.sample(inactive, len(active)))
            text, t = mark(e["tokens"], [1.0 if j in fake else 0.0 for j in range(len(e["tokens"]))]), 0
        truth.append(t)
        said.append(_ask(client, FUZZING, explanation, text))
    value, counts = _balanced(truth, said)
    return Score("fuzzing", value, len(truth), counts)


def negatives_for(db: Any, dictionary: str, feature: int, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``n`` examples of other features whose tokens this feature has no recorded activation on."""
    own = {r["token_index"] for r in db.query("SELECT token_index FROM examples WHERE dictionary = ? AND "
                                              "feature = ?", (dictionary, feature))}
    rows = db.query("SELECT token_index, tokens, acts, focus FROM examples WHERE dictionary = ? AND feature <> ? "
                    "AND kind = 'quantile' ORDER BY token_index LIMIT ?", (dictionary, feature, 20 * n + 50))
    import json

    pool = [r for r in rows if r["token_index"] not in own]
    random.Random(seed).shuffle(pool)
    return [{"tokens": json.loads(r["tokens"]) if isinstance(r["tokens"], str) else r["tokens"],
             "acts": [0.0] * len(json.loads(r["tokens"]) if isinstance(r["tokens"], str) else r["tokens"])}
            for r in pool[:n]]


def score_feature(client: ChatClient, db: Any, dictionary: str, feature: dict[str, Any], explanation: str,
                  n: int = 10, seed: int = 0) -> list[Score]:
    """Detection (``n`` positives, ``n`` negatives) and fuzzing (``n`` snippets) of one explanation."""
    pos = (feature["quantiles"] + feature["top"])[:n]
    neg = negatives_for(db, dictionary, int(feature["feature"]), n, seed)
    fuzz = (feature["top"] + feature["quantiles"])[:n]
    return [detection(client, explanation, pos, neg), fuzzing(client, explanation, fuzz, seed)]


__all__ = ["Score", "detection", "fuzzing", "score_feature", "parse_answer", "negatives_for"]
