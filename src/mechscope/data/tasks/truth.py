"""True / false statements for truth probing (CCS and its baselines), built offline and balanced.

Four datasets, each ≥ 200 items, half true and half false, each item tagged with a *group* (the landmark,
the country, the left operand ...) so that splits can keep every statement about one thing on one side:

* ``facts``: landmark → city (``data/tasks/facts.py``), two phrasings, each once true and once false;
* ``capitals``: country → capital, two phrasings, true and false;
* ``arith``: "a + b = c", c right or off by 1..9;
* ``compare``: "a is larger than b", for random pairs (true or false by the numbers).

``contrast_texts`` turns statements into the contrast-pair prompts of Burns et al.: the same question
answered " True" and " False".
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple

from mechscope.data.tasks.facts import FACTS
from mechscope.errors import ConfigError

QUESTION = "{}\nQuestion: Is the statement above true or false?\nAnswer:"
ANSWERS = (" True", " False")

CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("United Kingdom", "London"), ("Ireland", "Dublin"), ("Belgium", "Brussels"), ("Netherlands", "Amsterdam"),
    ("Austria", "Vienna"), ("Switzerland", "Bern"), ("Poland", "Warsaw"), ("Czech Republic", "Prague"),
    ("Hungary", "Budapest"), ("Greece", "Athens"), ("Sweden", "Stockholm"), ("Norway", "Oslo"),
    ("Denmark", "Copenhagen"), ("Finland", "Helsinki"), ("Russia", "Moscow"), ("Ukraine", "Kyiv"),
    ("Turkey", "Ankara"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Nigeria", "Abuja"), ("Ghana", "Accra"),
    ("Ethiopia", "Addis Ababa"), ("Morocco", "Rabat"), ("Algeria", "Algiers"), ("Tunisia", "Tunis"),
    ("South Africa", "Pretoria"), ("China", "Beijing"), ("Japan", "Tokyo"), ("South Korea", "Seoul"),
    ("India", "New Delhi"), ("Pakistan", "Islamabad"), ("Bangladesh", "Dhaka"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("Philippines", "Manila"), ("Malaysia", "Kuala Lumpur"),
    ("Australia", "Canberra"), ("New Zealand", "Wellington"), ("Canada", "Ottawa"), ("United States", "Washington"),
    ("Mexico", "Mexico City"), ("Brazil", "Brasilia"), ("Argentina", "Buenos Aires"), ("Chile", "Santiago"),
    ("Peru", "Lima"), ("Colombia", "Bogota"), ("Venezuela", "Caracas"), ("Cuba", "Havana"), ("Iran", "Tehran"),
    ("Iraq", "Baghdad"), ("Saudi Arabia", "Riyadh"), ("Israel", "Jerusalem"), ("Syria", "Damascus"),
    ("Lebanon", "Beirut"), ("Jordan", "Amman"), ("Afghanistan", "Kabul"), ("Nepal", "Kathmandu"),
    ("Sri Lanka", "Colombo"), ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"),
    ("Croatia", "Zagreb"), ("Iceland", "Reykjavik"), ("Estonia", "Tallinn"), ("Latvia", "Riga"),
    ("Lithuania", "Vilnius"), ("Slovakia", "Bratislava"), ("Slovenia", "Ljubljana"), ("Uruguay", "Montevideo"),
)


class Statement(NamedTuple):
    text: str
    label: int
    """1 = true, 0 = false."""
    group: int
    """Id of the thing the statement is about (splits never separate a group)."""


def _pairs_dataset(pairs: tuple[tuple[str, str], ...], templates: tuple[str, ...], seed: int) -> list[Statement]:
    rng = random.Random(seed)
    values = sorted({v for _, v in pairs})
    out = []
    for g, (subject, value) in enumerate(pairs):
        for tpl in templates:
            wrong = rng.choice([v for v in values if v != value])
            out += [Statement(tpl.format(subject, value), 1, g), Statement(tpl.format(subject, wrong), 0, g)]
    return out


def _unique_pairs(rng: random.Random, draw: Any, n: int = 120) -> list[tuple[int, int]]:
    seen: dict[tuple[int, int], None] = {}
    while len(seen) < n:
        seen[draw()] = None
    return list(seen)


def statements(name: str, *, seed: int = 0) -> list[Statement]:
    """The named dataset (``facts``, ``capitals``, ``arith``, ``compare``), balanced, in a seeded order."""
    rng = random.Random(seed)
    if name == "facts":
        out = _pairs_dataset(FACTS, ("The {} is located in the city of {}.", "The {} can be found in {}."), seed)
    elif name == "capitals":
        out = _pairs_dataset(CAPITALS, ("The capital of {} is {}.", "{1} is the capital city of {0}."), seed)
    elif name == "arith":
        out = []
        for g, (a, b) in enumerate(_unique_pairs(rng, lambda: (rng.randint(2, 60), rng.randint(2, 60)))):
            off = rng.choice([-1, 1]) * rng.randint(1, 9)
            out += [Statement(f"{a} + {b} = {a + b}.", 1, g), Statement(f"{a} + {b} = {a + b + off}.", 0, g)]
    elif name == "compare":
        out = []
        for g, (a, b) in enumerate(_unique_pairs(rng, lambda: tuple(sorted(rng.sample(range(1, 100), 2))))):
            hi, lo = max(a, b), min(a, b)
            out += [Statement(f"{hi} is larger than {lo}.", 1, g), Statement(f"{lo} is larger than {hi}.", 0, g)]
    else:
        raise ConfigError(f"unknown truth dataset {name!r}; choose one of facts, capitals, arith, compare")
    rng.shuffle(out)
    return out


def contrast_texts(items: list[Statement]) -> tuple[list[str], list[str], list[str]]:
    """``(questions, answered True, answered False)`` for each statement."""
    q = [QUESTION.format(s.text) for s in items]
    return q, [t + ANSWERS[0] for t in q], [t + ANSWERS[1] for t in q]


DATASETS = ("facts", "capitals", "arith", "compare")

__all__ = ["ANSWERS", "CAPITALS", "DATASETS", "QUESTION", "Statement", "contrast_texts", "statements"]
