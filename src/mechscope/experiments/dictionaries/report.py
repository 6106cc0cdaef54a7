"""The dictionaries case study's pictures and tour section: the Pareto figure of a study, and a live check.

``pareto_figure(rows)`` draws FVU and CE loss recovered against L0 per architecture from ``run_study``'s rows;
``tour_section`` shows the recorded study (re-evaluating one dictionary live) or makes a tiny live run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechscope.experiments.dictionaries.run import (
    DEFAULT_HOOK,
    eval_tokens,
    harvest,
    load_dictionary_dir,
    train_on_store,
)


def pareto_figure(rows: Sequence[dict[str, Any]]) -> Any:
    """Two panels: FVU and CE loss recovered against L0, one line per architecture."""
    from mechscope.viz.report import new_figure

    fig = new_figure(10, 4)
    axes = fig.subplots(1, 2)
    for arch in dict.fromkeys(r["arch"] for r in rows):
        pts = sorted((r for r in rows if r["arch"] == arch), key=lambda r: r["l0"])
        for ax, key in zip(axes, ("fvu", "ce_loss_recovered")):
            ax.plot([p["l0"] for p in pts], [p[key] for p in pts], marker="o", label=arch)
    for ax, key in zip(axes, ("fraction of variance unexplained", "CE loss recovered")):
        ax.set_xscale("log")
        ax.set_xlabel("L0 (active latents per token)")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].legend()
    return fig


def tour_section(out_dir: Path, model: Any = None, study_dir: str | Path = "runs/dictionaries/study") -> Any:
    """Tour section (<= 40 s): the recorded study's Pareto picture and table when ``study_dir`` holds one,
    plus one recorded TopK dictionary re-evaluated live on 2 held-out sequences; otherwise a tiny live run
    (harvest 1,024 rows at block 15, train a TopK for 40 steps, evaluate it spliced in).
    """
    from mechscope.dictionaries.evals import EvalConfig, evaluate
    from mechscope.viz.report import Section, esc, figure_html, table_html

    if model is None:
        from mechscope.models.loading import load

        model = load("smollm2-135m").eval()
    t0 = time.time()
    cols = ("arch", "value", "l0", "fvu", "ce_loss_recovered", "kl", "dead_fraction")
    results = Path(study_dir) / "results.json"
    toks = eval_tokens(model, n_seq=2, seq_len=64)
    if results.is_file():
        rows = json.loads(results.read_text())
        pick = min((r for r in rows if r["arch"] == "topk"), key=lambda r: abs(r["value"] - 32), default=rows[0])
        res = evaluate(model, load_dictionary_dir(pick["run"]), toks, cfg=EvalConfig(batch_size=2))
        live = {"arch": pick["arch"], "value": pick["value"]} | {c: getattr(res, c) for c in cols[2:]}
        body = (figure_html(pareto_figure(rows), "L0 vs FVU and CE loss recovered")
                + "<p>Recorded study (held-out stdlib docstrings; see docs/dictionaries.md):</p>"
                + table_html([{c: r[c] for c in cols} for r in rows])
                + "<p>Re-evaluated live on 2 held-out sequences of 64 tokens:</p>" + table_html([live]))
        note = f"study {esc(results)}; live check {time.time() - t0:.0f} s"
    else:
        work = Path(out_dir) / "dictionaries"
        harvest(model, [DEFAULT_HOOK], 1024, work / "acts", seq_len=33, batch_size=32, shard_rows=1024,
                model_name="smollm2-135m", progress=False)
        sae = train_on_store(work / "acts", work / "topk", "topk", d_sae=1152, options={"k": 32}, batch_size=128,
                             steps=40, buffer_rows=512, lr=2e-3, progress=False)
        res = evaluate(model, sae, toks, cfg=EvalConfig(batch_size=2))
        body = ("<p>No recorded study in this checkout, so a tiny live run: a TopK SAE (k=32, 1,152 latents) "
                "trained on 1,024 tokens of <code>blocks.15.hook_resid_post</code> and spliced back in.</p>"
                + table_html([{"arch": "topk", "value": 32} | {c: getattr(res, c) for c in cols[2:]}]))
        note = f"live run {time.time() - t0:.0f} s"
    return Section(title="Sparse dictionaries on SmolLM2", body=body, anchor="dictionaries", notes=[note])


__all__ = ["pareto_figure", "tour_section"]
