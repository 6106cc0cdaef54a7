"""``ioi``: indirect object identification on SmolLM2-135M against the heads ``docs/ioi.md`` found.

Data: ``data.tasks.ioi.ioi_pairs`` (template 0, ABBA and BABA mixed, ABC corruption), metric ``logit(IO) −
logit(S)`` at the last position. Reference edges, and why only these:

* ``docs/ioi.md`` found, by head-output patching and direct logit attribution, the name movers **23.3, 23.0,
  29.1, 28.1** (positive DLA and patching effect) and the negative / backup heads **29.0, 24.4, 23.2**
  (negative DLA; 23.2 also by patching, −0.30; 24.4 and 29.0 compensate when the name movers are
  ablated). What it measured is each head's output reaching the logits, so the edges are
  ``a23.h3->logits``, ``a23.h0->logits``, ``a29.h1->logits``, ``a28.h1->logits``, ``a29.h0->logits``,
  ``a24.h4->logits``, ``a23.h2->logits``.
* No q / k / v input edge is included: path patching into the name movers' queries found no S-inhibition
  head (every effect < 0.3 %), and the key/value route it suggests instead was not tested; the
  duplicate-token and induction candidates come from attention patterns alone, not from patching.

So this truth is a partial reference (7 edges of a graph of tens of thousands), not a complete circuit:
an ROC AUC against it measures whether a method ranks those heads' logit edges high.
"""

from __future__ import annotations

from typing import Any

from mechscope.circuits.truth.base import GroundTruth, LastLogitDiff

NAME_MOVERS = ((23, 3), (23, 0), (29, 1), (28, 1))
"""Name movers of ``docs/ioi.md`` (layer, head)."""
NEGATIVE_BACKUP = ((29, 0), (24, 4), (23, 2))
"""Negative / backup heads of ``docs/ioi.md`` (layer, head)."""
EDGES = frozenset(f"a{layer}.h{head}->logits" for layer, head in NAME_MOVERS + NEGATIVE_BACKUP)
"""The reference edges (module docstring)."""


def ioi_truth(model: Any = None, *, n_prompts: int = 32, seed: int = 0) -> GroundTruth:
    """The ``ioi`` ground truth on ``model`` (default: the embedded SmolLM2-135M, loaded here)."""
    from mechscope.data.tasks.ioi import ioi_pairs

    if model is None:
        import mechscope

        model = mechscope.load("smollm2-135m")
    model = model.eval()
    p = ioi_pairs(model.tokenizer, n_prompts, template=0, order="mixed", seed=seed)
    return GroundTruth(name="ioi", model=model, clean=p.clean, corrupted=p.corrupted,
                       metric=LastLogitDiff(p.answer, p.wrong, name="ioi_logit_diff"), edges=EDGES, readout=-1,
                       description="SmolLM2-135M IOI (template 0, ABC corruption); edges = the name movers' and "
                                   "negative/backup heads' outputs to the logits found in docs/ioi.md")


__all__ = ["EDGES", "NAME_MOVERS", "NEGATIVE_BACKUP", "ioi_truth"]
