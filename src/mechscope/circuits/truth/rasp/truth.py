"""``rasp:<program>`` ground truths: a compiled program, random clean/corrupted input pairs, a linear metric.

Pairs are drawn (seeded) from the program's domain with different reference outputs. The metric is a
``Contrast`` over every position where both reference outputs are defined: ``onehot(clean output) -
onehot(corrupted output)`` (categorical; a missing output is the zero vector) or ``clean - corrupted``
(numerical). The edges are the compiler's token-dependent wiring (``rasp/compiler.py``).
"""

from __future__ import annotations

import random

import torch

from mechscope.circuits.truth.base import Contrast, GroundTruth
from mechscope.circuits.truth.rasp.compiler import CompiledProgram, compile_program
from mechscope.circuits.truth.rasp.lang import UNDEFINED, SOp, evaluate
from mechscope.circuits.truth.rasp.programs import get_program
from mechscope.errors import ConfigError


def compile_named(name: str) -> tuple[CompiledProgram, list[tuple[object, ...]]]:
    """The compiled program called ``name`` and its whole input domain."""
    prog = get_program(name)
    return compile_program(prog.output, vocab=prog.vocab, max_len=prog.max_len), list(prog.domain())


def _direction(out: SOp, clean: list[object], corrupted: list[object]) -> torch.Tensor:
    """[pos vocab] weights for one pair (BOS row first, zero)."""
    width = len(out.values) if out.encoding == "categorical" else 1
    d = torch.zeros(len(clean) + 1, width)
    for i, (a, b) in enumerate(zip(clean, corrupted)):
        if a is UNDEFINED or b is UNDEFINED or a == b:
            continue
        if out.encoding == "numerical":
            d[i + 1, 0] = float(a) - float(b)  # type: ignore[arg-type]
            continue
        if a is not None:
            d[i + 1, out.values.index(a)] += 1.0
        if b is not None:
            d[i + 1, out.values.index(b)] -= 1.0
    return d


def rasp_truth(name: str, *, n_pairs: int = 32, seed: int = 0) -> GroundTruth:
    """``rasp:<name>`` (see the module docstring)."""
    if n_pairs < 1:
        raise ConfigError(f"n_pairs must be >= 1, got {n_pairs}")
    prog = get_program(name)
    comp, domain = compile_named(name)
    rng = random.Random(seed)
    clean: list[tuple[object, ...]] = []
    corrupted: list[tuple[object, ...]] = []
    dirs: list[torch.Tensor] = []
    while len(clean) < n_pairs:
        a, b = rng.choice(domain), rng.choice(domain)
        d = _direction(prog.output, evaluate(prog.output, a), evaluate(prog.output, b))
        if not bool(d.any()):
            continue
        clean.append(a)
        corrupted.append(b)
        dirs.append(d)
    return GroundTruth(name=f"rasp:{name}", model=comp.model, clean=comp.encode(clean),
                       corrupted=comp.encode(corrupted), metric=Contrast(torch.stack(dirs), name=f"rasp:{name}"),
                       edges=comp.edges, readout=None,
                       description=f"RASP program {name!r} ({prog.description}), compiled with known weights; "
                                   "edges = reads of token-dependent SOps")


__all__ = ["compile_named", "rasp_truth"]
