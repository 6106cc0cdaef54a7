"""Factual recall: "The Eiffel Tower is located in the city of" → " Paris".

``FACTS`` lists landmark → city pairs. ``known_facts`` keeps those the model gets right (the city's token is
the argmax at the last position) with a single-token city, so the case study only patches facts the model
knows. ``fact_pairs`` builds a patching batch: prompts with the same token length, each corrupted by another
landmark with a different city (the metric is ``logit(city) - logit(other city)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mechscope.data.prompts import PromptPairs, make_pairs
from mechscope.errors import ConfigError, TokenError

TEMPLATE = "The {} is located in the city of"

FACTS: tuple[tuple[str, str], ...] = (
    ("Eiffel Tower", "Paris"), ("Louvre", "Paris"), ("Arc de Triomphe", "Paris"), ("Notre-Dame Cathedral", "Paris"),
    ("Colosseum", "Rome"), ("Trevi Fountain", "Rome"), ("Pantheon", "Rome"), ("Vatican Museums", "Rome"),
    ("Big Ben", "London"), ("Tower Bridge", "London"), ("British Museum", "London"), ("Buckingham Palace", "London"),
    ("Statue of Liberty", "New"), ("Empire State Building", "New"), ("Central Park", "New"),
    ("Brandenburg Gate", "Berlin"), ("Reichstag building", "Berlin"), ("Berlin Wall Memorial", "Berlin"),
    ("Sagrada Familia", "Barcelona"), ("Park Guell", "Barcelona"), ("Camp Nou stadium", "Barcelona"),
    ("Prado Museum", "Madrid"), ("Royal Palace of Madrid", "Madrid"), ("Kremlin", "Moscow"),
    ("Red Square", "Moscow"), ("Saint Basil's Cathedral", "Moscow"), ("Acropolis", "Athens"),
    ("Parthenon", "Athens"), ("Forbidden City", "Beijing"), ("Tiananmen Square", "Beijing"),
    ("Sydney Opera House", "Sydney"), ("Harbour Bridge", "Sydney"), ("Golden Gate Bridge", "San"),
    ("Space Needle", "Seattle"), ("Willis Tower", "Chicago"), ("Hollywood Sign", "Los"),
    ("Burj Khalifa", "Dubai"), ("Rijksmuseum", "Amsterdam"), ("Anne Frank House", "Amsterdam"),
    ("Charles Bridge", "Prague"), ("Prague Castle", "Prague"), ("Little Mermaid statue", "Copenhagen"),
    ("Hagia Sophia", "Istanbul"), ("Blue Mosque", "Istanbul"), ("Grand Bazaar", "Istanbul"),
    ("Christ the Redeemer", "Rio"), ("CN Tower", "Toronto"), ("Atomium", "Brussels"),
    ("Manneken Pis", "Brussels"), ("Schonbrunn Palace", "Vienna"), ("St. Stephen's Cathedral", "Vienna"),
    ("Tokyo Tower", "Tokyo"), ("Shibuya Crossing", "Tokyo"), ("Brooklyn Bridge", "New"),
    ("White House", "Washington"), ("Lincoln Memorial", "Washington"), ("Leaning Tower", "Pisa"),
    ("Rialto Bridge", "Venice"), ("St. Mark's Basilica", "Venice"), ("Duomo of Florence", "Florence"),
    ("Uffizi Gallery", "Florence"), ("Edinburgh Castle", "Edinburgh"), ("Alhambra", "Granada"),
    ("Gateway of India", "Mumbai"), ("Taj Mahal", "Agra"), ("Petronas Towers", "Kuala"),
    ("Marina Bay Sands", "Singapore"), ("Table Mountain", "Cape"), ("Sydney Harbour Bridge", "Sydney"),
)


def known_facts(model: Any, facts: Sequence[tuple[str, str]] = FACTS, *, batch: int = 32
                ) -> list[tuple[str, str, int]]:
    """``(landmark, city, n_tokens)`` for the facts whose city the model predicts top-1 (single-token cities)."""
    tok = model.tokenizer
    cands = []
    for landmark, city in facts:
        try:
            cid = tok.to_single_token(" " + city)
        except TokenError:
            continue
        cands.append((landmark, city, cid, tok.encode(TEMPLATE.format(landmark))))
    out = []
    with torch.inference_mode():
        for lo in range(0, len(cands), batch):
            chunk = cands[lo:lo + batch]
            b = tok.encode_batch([TEMPLATE.format(c[0]) for c in chunk], padding_side="left")
            top = model(b.tokens, attention_mask=b.attention_mask)[:, -1].argmax(-1)
            out += [(c[0], c[1], len(c[3])) for c, t in zip(chunk, top.tolist()) if t == c[2]]
    return out


def fact_pairs(model: Any, facts: Sequence[tuple[str, str, int]] | None = None, *,
               max_prompts: int | None = None) -> PromptPairs:
    """Patching batch from the largest group of equal-length known facts; each corrupted by the next landmark
    in the group whose city differs (a cyclic shift)."""
    facts = known_facts(model) if facts is None else facts
    groups: dict[int, list[tuple[str, str, int]]] = {}
    for f in facts:
        groups.setdefault(f[2], []).append(f)
    group = max(groups.values(), key=len, default=[])
    cities = {f[1] for f in group}
    if len(cities) < 2:
        raise ConfigError(f"need known facts of equal length with >= 2 different cities; got {group}")
    group = group[:max_prompts] if max_prompts else group
    clean, corr, ans, wrong = [], [], [], []
    for i, (landmark, city, _) in enumerate(group):
        other = next(g for g in group[i + 1:] + group[:i] if g[1] != city) if len({g[1] for g in group}) > 1 \
            else None
        if other is None:
            continue
        clean.append(TEMPLATE.format(landmark))
        corr.append(TEMPLATE.format(other[0]))
        ans.append(" " + city)
        wrong.append(" " + other[1])
    return make_pairs(model.tokenizer, clean, corr, ans, wrong)


__all__ = ["FACTS", "TEMPLATE", "fact_pairs", "known_facts"]
