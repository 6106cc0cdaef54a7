"""The token-attribution comparison: IG, Shapley sampling and LIME vs embedding patching on IOI and facts.

For each prompt, every method attributes the same metric (IOI: ``logit(IO) - logit(S)``; facts: the logit of
the city) to the same tokens with the same baseline (a baseline *token*'s embedding; BOS held fixed), and we
report each method's Spearman rank correlation with activation patching of the token embeddings and whether
its top token is patching's top token (Sharkey et al.'s caution made measurable: do the methods agree?).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from mechscope.attribution.tokens import answer_metric, attribute_tokens, single_token, spearman

IOI_PROMPTS: tuple[tuple[str, str, str], ...] = (
    ("When Mary and John went to the store, John gave a drink to", " Mary", " John"),
    ("When Tom and James went to the park, James gave a ball to", " Tom", " James"),
    ("After Sarah and Paul went to the office, Sarah gave a letter to", " Paul", " Sarah"),
    ("When Anna and Mark got a snack at the cafe, Mark gave a cookie to", " Anna", " Mark"),
)
FACT_PROMPTS: tuple[tuple[str, str], ...] = (
    ("The Eiffel Tower is located in the city of", " Paris"),
    ("The Colosseum is located in the city of", " Rome"),
    ("The Brandenburg Gate is located in the city of", " Berlin"),
    ("The Kremlin is located in the city of", " Moscow"),
)
METHODS_COMPARED = ("ig", "shapley", "lime")


def compare_methods(model: Any, *, baseline: int | None = None, n_steps: int = 32, shapley_samples: int = 16,
                    lime_samples: int = 128, seed: int = 0,
                    ioi: Sequence[tuple[str, str, str]] = IOI_PROMPTS,
                    facts: Sequence[tuple[str, str]] = FACT_PROMPTS) -> dict[str, Any]:
    """Per-prompt attributions of every method and the summary table (see the module docstring)."""
    tok = model.tokenizer
    base = baseline if baseline is not None else tok.eos_token_id
    rows: list[dict[str, Any]] = []
    prompts = [("ioi", p, a, w) for p, a, w in ioi] + [("facts", p, a, None) for p, a in facts]
    for task, prompt, answer, wrong in prompts:
        ids = tok.to_tokens(prompt)[0]
        fixed = [0] if tok.bos_token_id is not None and int(ids[0]) == tok.bos_token_id else []
        metric = answer_metric(single_token(tok, answer), single_token(tok, wrong, "wrong") if wrong else None)
        kw: dict[str, Any] = {"baseline": base, "fixed": fixed, "seed": seed}
        res = {"patch": attribute_tokens(model, ids, metric, "patch", **kw),
               "ig": attribute_tokens(model, ids, metric, "ig", n_steps=n_steps, **kw),
               "shapley": attribute_tokens(model, ids, metric, "shapley", n_samples=shapley_samples, **kw),
               "lime": attribute_tokens(model, ids, metric, "lime", n_samples=lime_samples, **kw)}
        free = [i for i in range(ids.shape[0]) if i not in fixed]
        ref = res["patch"].attributions[free]
        row: dict[str, Any] = {"task": task, "prompt": prompt, "answer": answer, "wrong": wrong,
                               "tokens": tok.to_str_tokens(ids),
                               "metric_full": res["patch"].metric_full, "metric_baseline": res["patch"].metric_baseline,
                               "attributions": {m: [round(float(v), 4) for v in r.attributions] for m, r in res.items()},
                               "seconds": {m: r.wall_seconds for m, r in res.items()}}
        top_ref = int(ref.abs().argmax())
        for m in METHODS_COMPARED:
            a = res[m].attributions[free]
            row[f"spearman_{m}"] = spearman(a, ref)
            row[f"top1_{m}"] = int(a.abs().argmax()) == top_ref
        row["ig_completeness_gap"] = float(res["ig"].attributions.sum()) - (res["ig"].metric_full -
                                                                            res["ig"].metric_baseline)
        rows.append(row)
    table = []
    for task in ("ioi", "facts"):
        sel = [r for r in rows if r["task"] == task]
        if not sel:
            continue
        for m in METHODS_COMPARED:
            table.append({"task": task, "method": m, "n_prompts": len(sel),
                          "mean_spearman_vs_patch": statistics.fmean(r[f"spearman_{m}"] for r in sel),
                          "min_spearman_vs_patch": min(r[f"spearman_{m}"] for r in sel),
                          "top1_agreement": sum(r[f"top1_{m}"] for r in sel) / len(sel),
                          "mean_seconds": statistics.fmean(r["seconds"][m] for r in sel)})
    return {"baseline_token": base, "n_steps": n_steps, "shapley_samples": shapley_samples,
            "lime_samples": lime_samples, "table": table, "prompts": rows}


__all__ = ["compare_methods", "IOI_PROMPTS", "FACT_PROMPTS"]
