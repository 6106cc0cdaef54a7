"""Indirect object identification (Wang et al. 2022): "When Mary and John went to the store, John gave a
drink to" → " Mary".

Each prompt names two people; one (the subject S) is repeated, the other (the indirect object IO) is the
answer. ABBA prompts put IO first ("Mary and John ... John ... → Mary"), BABA prompts put S first ("John and
Mary ... John ... → Mary"). The ABC corruption replaces all three name slots with three *other* distinct
names, removing the repetition that identifies S while keeping the length; the metric is the clean
``logit(IO) - logit(S)``. Names are kept only if ``" Name"`` is a single token for the model's tokenizer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Literal

import torch

from mechscope.data.prompts import PromptPairs, make_pairs
from mechscope.errors import ConfigError, TokenError

TEMPLATES: tuple[str, ...] = (
    "When [A] and [B] went to the store, [C] gave a drink to",
    "When [A] and [B] went to the park, [C] gave a ball to",
    "After [A] and [B] went to the office, [C] gave a letter to",
    "When [A] and [B] got a snack at the cafe, [C] gave a cookie to",
    "While [A] and [B] were working at the school, [C] gave a book to",
    "Then, [A] and [B] had a long argument. Afterwards [C] said to",
    "Friends [A] and [B] found a ring at the beach. [C] gave it to",
    "The local big event was attended by [A] and [B]. Afterwards [C] handed a flower to",
)

NAMES: tuple[str, ...] = (
    "Mary", "John", "Tom", "James", "Dan", "Sarah", "Paul", "Anna", "Mark", "Lisa", "David", "Laura", "Mike",
    "Emma", "Peter", "Kate", "Chris", "Alice", "Steve", "Jane", "Bob", "Rachel", "Kevin", "Linda", "George",
    "Susan", "Brian", "Amy", "Eric", "Helen", "Jack", "Grace", "Adam", "Julia", "Sam", "Rose", "Ben", "Emily",
    "Alex", "Lucy", "Henry", "Jessica", "Andrew", "Karen", "Richard", "Nancy", "Robert", "Sophie", "Michael",
)

Order = Literal["ABBA", "BABA", "mixed"]


def single_token_names(tokenizer: Any, names: Sequence[str] = NAMES) -> list[str]:
    """Names whose leading-space form is one token for ``tokenizer`` (order kept)."""
    out = []
    for n in names:
        try:
            tokenizer.to_single_token(" " + n)
        except TokenError:
            continue
        out.append(n)
    return out


def _fill(template: str, a: str, b: str, c: str) -> str:
    return template.replace("[A]", a).replace("[B]", b).replace("[C]", c)


def ioi_pairs(tokenizer: Any, n: int, *, template: int | str = 0, order: Order = "mixed", seed: int = 0,
              names: Sequence[str] | None = None, prepend_bos: bool | None = None) -> PromptPairs:
    """``n`` IOI prompts from one template with ABC corruptions, as aligned ``PromptPairs``.

    ``roles`` holds the positions ``IO``, ``S1``, ``S2`` and ``end`` per prompt; position labels name them.
    """
    tpl = TEMPLATES[template] if isinstance(template, int) else template
    if not all(s in tpl for s in ("[A]", "[B]", "[C]")):
        raise ConfigError(f"an IOI template needs the slots [A], [B], [C]; got {tpl!r}")
    if order not in ("ABBA", "BABA", "mixed"):
        raise ConfigError(f"order must be 'ABBA', 'BABA' or 'mixed', got {order!r}")
    pool = single_token_names(tokenizer, names or NAMES)
    if len(pool) < 5:
        raise TokenError(f"only {len(pool)} names are single tokens for this tokenizer ({pool}); need >= 5")
    rng = random.Random(seed)
    clean, corrupted, io, s = [], [], [], []
    for i in range(n):
        io_n, s_n, x, y, z = rng.sample(pool, 5)
        abba = order == "ABBA" or (order == "mixed" and i % 2 == 0)
        clean.append(_fill(tpl, io_n, s_n, s_n) if abba else _fill(tpl, s_n, io_n, s_n))
        corrupted.append(_fill(tpl, x, y, z))
        io.append(" " + io_n)
        s.append(" " + s_n)
    pairs = make_pairs(tokenizer, clean, corrupted, io, s, prepend_bos=prepend_bos)
    return _with_roles(tokenizer, pairs)


def _with_roles(tokenizer: Any, pairs: PromptPairs) -> PromptPairs:
    """Find IO, S1, S2 by their ids (S occurs twice, IO once) and label positions by role."""
    t, b = pairs.clean, pairs.clean.shape[0]
    is_io = t == pairs.answer[:, None]
    is_s = t == pairs.wrong[:, None]
    if not bool((is_io.sum(1) == 1).all() and (is_s.sum(1) == 2).all()):
        raise TokenError("could not locate IO once and S twice in every prompt (does a name merge with "
                         "its neighbour in this tokenizer?)")
    ar = torch.arange(t.shape[1])
    s_pos = torch.where(is_s, ar, t.shape[1]).sort(1).values[:, :2]
    roles = {"IO": is_io.long().argmax(1), "S1": s_pos[:, 0], "S2": s_pos[:, 1],
             "end": torch.full((b,), t.shape[1] - 1)}
    labels = [f"{s}" for s in tokenizer.to_str_tokens(t[0])]
    for role, pos in roles.items():
        if bool((pos == pos[0]).all()):
            labels[int(pos[0])] = f"[{role}]" if role != "end" else f"{labels[int(pos[0])]}[end]"
    return PromptPairs(clean=pairs.clean, corrupted=pairs.corrupted, answer=pairs.answer, wrong=pairs.wrong,
                       pos_labels=labels, roles=roles, texts=pairs.texts)


def ioi_dataset(tokenizer: Any, n_per_template: int, *, templates: Sequence[int] | None = None, seed: int = 0,
                prepend_bos: bool | None = None) -> list[PromptPairs]:
    """One ``PromptPairs`` per template (mixed ABBA/BABA), for accuracy over varied prompts."""
    idx = range(len(TEMPLATES)) if templates is None else templates
    return [ioi_pairs(tokenizer, n_per_template, template=i, seed=seed + 1000 * i, prepend_bos=prepend_bos)
            for i in idx]


__all__ = ["NAMES", "TEMPLATES", "ioi_dataset", "ioi_pairs", "single_token_names"]
