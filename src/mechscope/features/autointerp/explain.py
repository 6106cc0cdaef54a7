"""Explaining a feature: show the explainer its max-activating and quantile examples with the activating
tokens marked ``<<like this>>`` and ask for a short description (delphi's default explainer, shortened for
small models)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mechscope.features.autointerp.clients import ChatClient, Message

SYSTEM = ("You explain features of a neural network. You see text snippets; the tokens where the feature is "
          "active are marked <<like this>>. Reply with one short phrase (at most 12 words) describing what the "
          "marked tokens have in common. Reply with the phrase only.")


def mark(tokens: Sequence[str], acts: Sequence[float], threshold: float = 0.0) -> str:
    """The snippet with every token whose activation exceeds ``threshold`` wrapped in ``<< >>``."""
    return "".join(f"<<{t}>>" if a > threshold else t for t, a in zip(tokens, acts, strict=True))


def explain_messages(feature: dict[str, Any], n_examples: int = 10) -> list[Message]:
    """The chat asking for an explanation of ``feature`` (a ``FeatureDB.feature`` dict)."""
    examples = (feature["top"] + feature["quantiles"])[:n_examples]
    lines = [f"Example {i + 1}: {mark(e['tokens'], e['acts'])}" for i, e in enumerate(examples)]
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": "\n".join(lines) + "\nWhat do the marked tokens have in common?"}]


def clean_explanation(reply: str) -> str:
    """The first non-empty line of a reply without labels, quotes or marks."""
    for line in reply.strip().splitlines():
        line = re.sub(r"^\s*(explanation|answer|feature)\s*:\s*", "", line.strip(), flags=re.I).strip(" *")
        if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'`":
            line = line[1:-1].strip()
        if line:
            return line[:300]
    return ""


def explain(client: ChatClient, feature: dict[str, Any], n_examples: int = 10) -> str:
    """An explanation of ``feature`` by ``client`` (empty when the feature never fired)."""
    if not feature["top"]:
        return ""
    return clean_explanation(client.chat(explain_messages(feature, n_examples), max_tokens=32))


__all__ = ["explain", "explain_messages", "mark", "clean_explanation", "SYSTEM"]
