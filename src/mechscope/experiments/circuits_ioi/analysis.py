"""Every method against the IOI reference edges where all of them can run: the edges into ``logits``.

A full exact or ACDC sweep of SmolLM2's 70,651 edges costs ~10 hours here (``docs/circuits.md``), so the
methods are compared on the 301 edges into ``logits`` — which is where all seven reference edges of
``circuits.truth.ioi`` are. ``exact`` patches each of those edges alone (one ``evaluate_many`` variant per
edge, the rest of the graph clean), ``acdc`` sweeps only the ``logits`` receiver (``receivers=["logits"]``,
exactly the first decisions of a full run), ``eap`` / ``eap-ig`` score the whole graph and are read there.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from mechscope.circuits.bench import roc_auc
from mechscope.circuits.discover import discover
from mechscope.circuits.evaluate import evaluate_many
from mechscope.circuits.graph import Graph
from mechscope.circuits.truth.base import GroundTruth

METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "acdc_kl_0.005": ("acdc", {"threshold": 0.005, "objective": "kl"}),
    "acdc_metric_0.01": ("acdc", {"threshold": 0.01, "objective": "metric"}),
    "eap": ("eap", {}),
    "eap-ig_5": ("eap-ig", {"steps": 5}),
}
"""The non-exact methods compared, with their options (ACDC also gets ``receivers=["logits"]``)."""


def logits_edge_auc(truth: GroundTruth, methods: dict[str, tuple[str, dict[str, Any]]] | None = None,
                    chunk: int = 32) -> dict[str, Any]:
    """ROC AUC of each method's |score| for the truth's edges into ``logits`` among all edges into ``logits``."""
    m, g = truth.model, Graph.from_model(truth.model)
    names = [e.name for e in g.edges]
    idx = [i for i, n in enumerate(names) if n.endswith("->logits")]
    out: dict[str, Any] = {"n_prompts": int(truth.clean.shape[0]), "n_logits_edges": len(idx),
                           "n_edges": len(names), "auc_logits_edges": {}, "wall_s": {}, "acdc_kept_truth": {}}
    pos = frozenset(e for e in truth.edges if e.endswith("->logits"))
    out["n_truth_edges_into_logits"] = len(pos)
    t0 = time.perf_counter()
    keep = torch.ones(len(idx), len(names), dtype=torch.bool)
    keep[torch.arange(len(idx)), torch.tensor(idx)] = False
    rec = evaluate_many(m, truth.clean, truth.corrupted, truth.metric, keep, truth.readout, graph=g, chunk=chunk)
    exact = {names[i]: 1.0 - r for i, r in zip(idx, rec)}
    out["wall_s"]["exact"] = time.perf_counter() - t0
    out["auc_logits_edges"]["exact"] = roc_auc(exact, pos)
    out["exact_top10"] = sorted(exact.items(), key=lambda kv: -abs(kv[1]))[:10]
    for key, (method, opts) in (METHODS if methods is None else methods).items():
        if method == "acdc":
            opts = {**opts, "receivers": ["logits"]}
        t0 = time.perf_counter()
        s = discover(m, truth.clean, truth.corrupted, truth.metric, method=method, graph=g, readout=truth.readout,
                     **opts)
        out["wall_s"][key] = time.perf_counter() - t0
        sub = {names[i]: float(s.to_dict()[names[i]]) for i in idx}
        out["auc_logits_edges"][key] = roc_auc(sub, pos)
        if method == "acdc":
            out["acdc_kept_truth"][key] = sorted(n for n in (s.kept or ()) if n in pos)
    return out


def main() -> None:
    """``python -m mechscope.experiments.circuits_ioi.analysis [N_PROMPTS]``: the JSON of ``logits_edge_auc``."""
    import json
    import sys

    from mechscope.circuits.truth.ioi import ioi_truth

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    sys.stdout.write(json.dumps(logits_edge_auc(ioi_truth(n_prompts=n)), indent=1) + "\n")


__all__ = ["METHODS", "logits_edge_auc"]

if __name__ == "__main__":
    main()
