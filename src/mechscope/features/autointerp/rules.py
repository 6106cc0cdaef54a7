"""A rule-based explainer and scorer: no language model, the same prompts.

``TopTokenRule`` answers the explainer prompt with "the token 'X'" (X the token marked most often) and the
scorer prompts literally: detection says 1 iff X occurs in the snippet, fuzzing says 1 iff every marked token is
X. It measures how *token-monosemantic* a feature is with delphi's exact protocol, and it is what the local
study reports next to SmolLM2-135M (too small to explain features: ``docs/features.md``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mechscope.features.autointerp.clients import Message

_MARK = re.compile(r"<<(.*?)>>", re.S)
_EXPLAINED = re.compile(r"described as: the token '(.*?)'\n", re.S)


class TopTokenRule:
    """See the module docstring."""

    name = "rule:top-token"

    def chat(self, messages: Sequence[Message], max_tokens: int = 64) -> str:
        """Answer an explainer or scorer prompt of ``autointerp`` by rule."""
        text = messages[-1]["content"]
        if "What do the marked tokens have in common?" in text:
            marked = _MARK.findall(text)
            if not marked:
                return "nothing"
            return f"the token '{max(sorted(set(marked)), key=marked.count)}'"
        m = _EXPLAINED.search(text)
        if m is None:
            return "0"
        token = m.group(1)
        snippet = text.split("\nText: ", 1)[1].rsplit("\n", 1)[0]
        if "marked tokens match" in text:
            marks = _MARK.findall(snippet)
            return "1" if marks and all(t == token for t in marks) else "0"
        return "1" if token in snippet else "0"


__all__ = ["TopTokenRule"]
