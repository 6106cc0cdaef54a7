"""Reverse-engineering a grokking run: key frequencies, the Fourier circuit, progress measures over checkpoints.

``analyze(run_dir)`` returns the summary JSON (with per-checkpoint ``history``), following Nanda et al.
(2023) through ``mechscope.analysis.fourier``; ``cached_analysis`` keeps it in ``<run>/analysis.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from torch import Tensor

from mechscope.data.tasks.modular import ModularData
from mechscope.experiments.grokking.config import EXPERIMENT
from mechscope.experiments.grokking.run import load_run
from mechscope.train import list_checkpoints, load_weights, read_metrics
from mechscope.train.checkpoint import read_manifest


def _first_step(records: list[dict[str, Any]], key: str, threshold: float) -> int | None:
    return next((int(r["step"]) for r in records if (r.get(key) or 0.0) >= threshold), None)


def _first_below(history: list[dict[str, Any]], key: str, threshold: float) -> int | None:
    return next((int(r["step"]) for r in history if r[key] < threshold), None)


def analyze(run_dir: str | Path, *, max_checkpoints: int = 60) -> dict[str, Any]:
    """The summary JSON of a finished run plus per-checkpoint progress measures (key ``history``)."""
    from mechscope.analysis.fourier import (
        embedding_freq_norms,
        key_fraction,
        key_frequencies,
        neuron_freq_fractions,
        progress_measures,
    )

    t0 = time.perf_counter()
    cfg, model, data = load_run(run_dir)
    p = cfg.p
    records = read_metrics(run_dir)
    energy = embedding_freq_norms(model.W_E[:p])
    keys = key_frequencies(energy)
    acts = _final_acts(model, data)
    fracs = neuron_freq_fractions(acts)  # [d_mlp p//2+1]
    neuron_r2 = fracs[:, keys].max(-1).values
    final = progress_measures(model, data, keys)
    ckpts = list_checkpoints(run_dir)
    stride = max(1, -(-len(ckpts) // max_checkpoints))
    history = []
    for step, path in ckpts[::stride] + ([ckpts[-1]] if (len(ckpts) - 1) % stride else []):
        load_weights(model, path, experiment=EXPERIMENT)
        history.append({"step": step, **progress_measures(model, data, keys, ablate_nonkey=False)})
    last = read_manifest(ckpts[-1][1])
    return {"analysis_version": ANALYSIS_VERSION, "p": p, "train_acc": final["train_acc"], "test_acc": final["test_acc"],
            "epochs": int(last["step"]),
            "epoch_train_100": _first_step(records, "acc", 1.0), "epoch_test_99": _first_step(records, "test_acc", 0.99),
            "epoch_restricted_loss_below_1": _first_below(history, "restricted_loss", 1.0),
            "epoch_test_loss_below_1": _first_below(history, "test_loss", 1.0),
            "key_frequencies": keys, "embed_key_freq_fraction": key_fraction(energy, keys),
            "neuron_key_freq_r2": float(neuron_r2.median()), "train_loss": final["train_loss"],
            "test_loss": final["test_loss"], "restricted_loss": final["restricted_loss"],
            "excluded_loss": final["excluded_loss"], "logit_trig_cosine": final["logit_trig_cosine"],
            "ablated_nonkey_test_loss": final["ablated_nonkey_test_loss"],
            "wall_seconds": float(last.get("wall_seconds", 0.0)), "analysis_seconds": time.perf_counter() - t0,
            "settings": cfg.to_dict(), "embed_freq_energy": energy[1:].tolist(), "history": history}


def _final_acts(model: Any, data: ModularData) -> Tensor:
    """MLP activations at '=' over all pairs, [p p d_mlp]."""
    _, cache = model.run_with_cache(data.tokens, names=["blocks.0.mlp.hook_post"])
    return cache["blocks.0.mlp.hook_post"][:, -1].reshape(data.p, data.p, -1)


ANALYSIS_FILE = "analysis.json"
ANALYSIS_VERSION = 2  # bump when analyze() output changes, so cached summaries are recomputed


def cached_analysis(run_dir: str | Path, *, max_checkpoints: int = 60) -> dict[str, Any]:
    """``analyze`` once per final checkpoint: reuse ``<run>/analysis.json`` when it matches, else write it."""
    from mechscope.train.checkpoint import atomic_write

    d = Path(run_dir)
    load_run(d)  # verifies the experiment and the final checkpoint's hashes even when the cache is used
    ckpts = list_checkpoints(d)
    path = d / ANALYSIS_FILE
    if ckpts and path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("epochs") == ckpts[-1][0] and cached.get("analysis_version") == ANALYSIS_VERSION:
                return cached
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass  # recompute below
    summary = analyze(d, max_checkpoints=max_checkpoints)
    atomic_write(path, lambda p: p.write_text(json.dumps(summary), encoding="utf-8"))
    return summary
