"""``CausalModel``: a small high-level causal graph (variables, parents, mechanisms) and its counterfactuals.

Causal abstraction (Geiger et al.) asks whether a network *implements* such a graph: whether some
activation subspace plays the role of a variable. The graph is plain data: each variable has a tuple of
possible values, a tuple of parents, and (unless it is an input) a mechanism computing it from its
parents' values. ``run`` evaluates it; ``run_interchange`` evaluates it with some variables forced to the
values they take on *source* inputs, which is the label an interchange intervention on the network must
reproduce. ``counterfactual_dataset`` samples (base, sources, intervened output) triples.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from mechscope.errors import ConfigError


@dataclass(frozen=True)
class CausalModel:
    """Variables with values, parents and mechanisms; inputs are variables without parents."""

    values: Mapping[str, Sequence[Any]]
    """Possible values of every variable."""
    parents: Mapping[str, Sequence[str]]
    """Parents of every non-input variable."""
    mechanisms: Mapping[str, Callable[..., Any]]
    """``mechanisms[v](*parent_values)`` computes ``v`` (non-input variables only)."""
    output: str
    """The variable the network's output corresponds to."""
    order: list[str] = field(init=False)

    def __post_init__(self) -> None:
        unknown = {p for ps in self.parents.values() for p in ps} - set(self.values)
        missing = set(self.parents) - set(self.mechanisms)
        if unknown or missing or self.output not in self.values:
            raise ConfigError(f"CausalModel: parents name unknown variables {sorted(unknown)}, variables without a "
                              f"mechanism {sorted(missing)}, or output {self.output!r} not among {sorted(self.values)}")
        order: list[str] = [v for v in self.values if v not in self.parents]
        todo = [v for v in self.values if v in self.parents]
        while todo:
            ready = [v for v in todo if all(p in order for p in self.parents[v])]
            if not ready:
                raise ConfigError(f"CausalModel has a cycle among {todo}")
            order += ready
            todo = [v for v in todo if v not in ready]
        object.__setattr__(self, "order", order)

    @property
    def inputs(self) -> list[str]:
        return [v for v in self.values if v not in self.parents]

    def run(self, inputs: Mapping[str, Any], fixed: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every variable's value on ``inputs``, with the variables in ``fixed`` forced to the given values."""
        missing = set(self.inputs) - set(inputs)
        if missing:
            raise ConfigError(f"CausalModel.run needs every input variable; missing {sorted(missing)}")
        unknown = set(fixed or {}) - set(self.values)
        if unknown:
            raise ConfigError(f"cannot fix unknown variables {sorted(unknown)}; the model has {sorted(self.values)}")
        vals: dict[str, Any] = {}
        for v in self.order:
            if fixed and v in fixed:
                vals[v] = fixed[v]
            elif v in self.parents:
                vals[v] = self.mechanisms[v](*(vals[p] for p in self.parents[v]))
            else:
                vals[v] = inputs[v]
        return vals

    def run_interchange(self, base: Mapping[str, Any], sources: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """``run(base)`` with each variable ``v`` in ``sources`` set to its value on ``sources[v]``."""
        return self.run(base, {v: self.run(src)[v] for v, src in sources.items()})


class Counterfactual(NamedTuple):
    base: dict[str, Any]
    sources: dict[str, dict[str, Any]]
    """Intervened variable -> the source input it takes its value from."""
    label: Any
    """The output variable under the interchange."""
    base_label: Any


def counterfactual_dataset(model: CausalModel, sample_input: Callable[[random.Random], dict[str, Any]], n: int,
                           intervene: Sequence[Sequence[str]], *, seed: int = 0) -> list[Counterfactual]:
    """``n`` counterfactuals; each intervenes on one of the variable sets in ``intervene`` (cycled), every
    variable of the set taking its value from its own freshly sampled source input."""
    bad = {v for vs in intervene for v in vs} - set(model.values)
    if bad or not intervene:
        raise ConfigError(f"intervene must list sets of known variables, got unknown {sorted(bad)} or nothing")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        base = sample_input(rng)
        sources = {v: sample_input(rng) for v in intervene[i % len(intervene)]}
        out.append(Counterfactual(base, sources, model.run_interchange(base, sources)[model.output],
                                  model.run(base)[model.output]))
    return out


__all__ = ["CausalModel", "Counterfactual", "counterfactual_dataset"]
