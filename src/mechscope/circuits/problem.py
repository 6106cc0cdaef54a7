"""``Problem``: one circuit question (model, graph, clean / corrupted tokens, metric, readout), checked once.

Every method and ``evaluate`` build one, so bad input gets the same clear errors everywhere: clean and
corrupted must be int [batch pos] of one shape, the readout position must exist, and the metric must map
logits [batch pos vocab] to one float per example [batch]. With ``readout=r`` the metric sees only that
position (``pos`` has length 1: index it with ``[:, -1]``); with ``readout=None`` it sees every position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from mechscope.circuits.graph import Graph
from mechscope.circuits.patchable import (
    Ablation,
    MetricFn,
    ablate,
    check_metric_output,
    check_pair,
    patched_logits,
    per_variant_metric,
    sender_outputs,
)
from mechscope.errors import ConfigError, ShapeError


@dataclass
class Problem:
    """See the module docstring. ``clean_value`` is the mean metric of the clean forward, ``corrupted_value``
    that of the corrupted forward (for mean / zero / resample ablation: of the forward with every edge
    ablated)."""

    model: Any
    graph: Graph
    clean: Int[Tensor, "batch pos"]
    corrupted: Int[Tensor, "batch pos"]
    metric: MetricFn
    readout: int | None
    ablation: Ablation = "corrupted"
    seed: int = 0
    patch: list[Tensor] = field(init=False)
    _clean: tuple[list[Tensor], float] | None = field(init=False, default=None)
    _clean_value: float | None = field(init=False, default=None)
    corrupted_value: float = field(init=False)
    forwards: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        check_pair(self.clean, self.corrupted)
        p = self.clean.shape[1]
        if self.readout is not None and not -p <= self.readout < p:
            raise ConfigError(f"readout must be a position in [-{p}, {p}) or None (every position), got {self.readout}")
        if (self.graph.n_layers, self.graph.n_heads, self.graph.n_kv_heads) != (
                self.model.cfg.n_layers, self.model.cfg.attention.n_heads, self.model.cfg.attention.kv_heads):
            raise ConfigError("graph does not match the model (build it with Graph.from_model(model))")
        corrupted_outputs, corrupted_logits = sender_outputs(self.model, self.graph, self.corrupted, self.readout)
        self.corrupted_value = float(self.call_metric(corrupted_logits).mean())
        self.patch = ablate(corrupted_outputs, self.ablation, self.seed)
        if self.ablation != "corrupted":  # the 0 of recovery is "every edge ablated"
            with torch.no_grad():
                self.corrupted_value = float(self.run(self.graph.valid.float()).mean())

    @property
    def clean_outputs(self) -> list[Tensor]:
        """Every sender group's output on the clean tokens [batch pos n d_model] (computed on first use)."""
        return self._clean_run()[0]

    @property
    def clean_value(self) -> float:
        """Mean metric of the clean forward (computed on first use)."""
        if self._clean is None and self._clean_value is not None:
            return self._clean_value
        return self._clean_run()[1]

    @property
    def clean_outputs_known(self) -> bool:
        """Whether the clean run is already recorded (``set_clean`` or first use)."""
        return self._clean is not None

    def _clean_run(self) -> tuple[list[Tensor], float]:
        if self._clean is None:
            outputs, logits = sender_outputs(self.model, self.graph, self.clean, self.readout)
            self._clean = (outputs, float(self.call_metric(logits).mean()))
        return self._clean

    def set_clean(self, outputs: list[Tensor] | None, values: Tensor) -> None:
        """Record the clean per-example metric [batch] (and, when given, the sender outputs) from a forward a
        method ran anyway (EAP's gradient forward is the clean one), so the problem does not run it again
        (without outputs, ``clean_outputs`` still runs the clean forward on first use)."""
        value = float(check_metric_output(values, self.clean.shape[0]).mean())
        if outputs is None:
            self._clean_value = value
        else:
            self._clean = (outputs, value)

    def call_metric(self, logits: Tensor) -> Tensor:
        """The metric on [batch pos vocab] logits with its output shape checked."""
        try:
            value = self.metric(logits)
        except IndexError as e:
            raise ShapeError(f"the metric failed on logits of shape {tuple(logits.shape)} ({e}); with "
                             f"readout={self.readout} it sees only that position, so index it with [:, -1] "
                             "(or pass readout=None to give it every position)") from e
        return check_metric_output(value, logits.shape[0])

    def run(self, masks: Tensor, *, fixed: Tensor | None = None) -> Tensor:
        """Per-variant, per-example metric [V batch] of the clean input with edges patched by ``masks``."""
        logits = self.logits(masks, fixed=fixed)
        n = 1 if masks.dim() == 2 else masks.shape[0]
        try:
            return per_variant_metric(self.metric, logits, n)
        except IndexError as e:
            raise ShapeError(f"the metric failed on logits of shape {tuple(logits.shape)} ({e}); index the "
                             "readout position with [:, -1]") from e

    def logits(self, masks: Tensor, *, fixed: Tensor | None = None) -> Tensor:
        """Logits [V*batch out_pos vocab] of the clean input with edges patched by ``masks`` (rows variant-major)."""
        self.forwards += 1
        return patched_logits(self.model, self.graph, self.clean, self.patch, masks, readout=self.readout,
                              fixed=fixed)

    def normalised(self, value: float) -> float:
        """0 = the corrupted baseline, 1 = the clean baseline."""
        denom = self.clean_value - self.corrupted_value
        if abs(denom) < 1e-12:
            raise ConfigError("the clean and corrupted runs give the same metric, so recovery is undefined; "
                              "check that the corruption changes the behaviour")
        return (value - self.corrupted_value) / denom


__all__ = ["Problem"]
