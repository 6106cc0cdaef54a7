"""CCS on a language model, per layer, next to its baselines: supervised logistic regression, zero-shot, random.

For every statement of a truth dataset (``data/tasks/truth.py``) the model reads the question answered
" True" and answered " False"; the residual stream after every block at the last token of each is one
contrast pair (all layers from one forward per side). Splits keep each group (landmark, country, operand)
on one side (train 60% / validation 10% / test 30%). Per layer: CCS test accuracy (up to sign), the
logistic regression ceiling, a random direction; once: zero-shot (does the model give the true completion
the higher log-probability?). The headline layer is the one whose logistic probe is best on *validation*.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _sequence_logprob(model: Any, texts: list[str], batch_size: int) -> Tensor:
    """Total log-probability of each text (padding excluded) [n]."""
    out = []
    with torch.inference_mode():
        for lo in range(0, len(texts), batch_size):
            b = model.tokenizer.encode_batch(texts[lo:lo + batch_size], padding_side="left")
            lp = model(b.tokens, attention_mask=b.attention_mask).log_softmax(-1)[:, :-1]
            tok = lp.gather(-1, b.tokens[:, 1:, None])[..., 0]
            out.append((tok * b.attention_mask[:, 1:]).sum(1))
    return torch.cat(out)


def _last_token_acts(model: Any, texts: list[str], hooks: list[str], labels: Tensor, groups: Tensor,
                     batch_size: int) -> Any:
    from mechscope.probes.dataset import collect

    b = model.tokenizer.encode_batch(texts, padding_side="left")
    return collect(model, hooks, b.tokens, torch.full((len(texts),), -1), labels, groups=groups,
                   attention_mask=b.attention_mask, batch_size=batch_size, types_from_tokens=False)


def ccs_study(model: Any, dataset: str, *, seed: int = 0, batch_size: int = 16, restarts: int = 10,
              epochs: int = 1000, max_items: int | None = None) -> dict[str, Any]:
    """``{"n", "layer", "ccs", "logistic", "zero_shot", "random", "by_layer": [...]}`` (test accuracies)."""
    from mechscope.data.tasks.truth import contrast_texts, statements
    from mechscope.probes.ccs import CCSConfig, fit_ccs, random_direction_accuracy, supervised_accuracy
    from mechscope.probes.dataset import split_by_group
    from mechscope.probes.sweep import layer_hooks

    items = statements(dataset, seed=seed)[:max_items]
    _, pos_t, neg_t = contrast_texts(items)
    y = torch.tensor([s.label for s in items])
    groups = torch.tensor([s.group for s in items])
    hooks = layer_hooks("hook_resid_post", model.cfg.n_layers)
    pos = _last_token_acts(model, pos_t, hooks, y, groups, batch_size)
    neg = _last_token_acts(model, neg_t, hooks, y, groups, batch_size)
    tr, va, te = split_by_group(groups, (0.6, 0.1, 0.3), seed=seed)
    zero = (_sequence_logprob(model, pos_t, batch_size) > _sequence_logprob(model, neg_t, batch_size)).long()
    zero_shot = float((zero[te] == y[te]).float().mean())
    cfg = CCSConfig(restarts=restarts, epochs=epochs, seed=seed)
    rows = []
    for i, h in enumerate(hooks):
        p, n = pos.acts[h], neg.acts[h]
        probe = fit_ccs(p[tr], n[tr], cfg)
        rows.append({"layer": i, "ccs": probe.accuracy(p[te], n[te], y[te]),
                     "logistic": supervised_accuracy(p[tr], n[tr], y[tr], p[te], n[te], y[te]),
                     "logistic_val": supervised_accuracy(p[tr], n[tr], y[tr], p[va], n[va], y[va]),
                     "random": random_direction_accuracy(p[te], n[te], y[te], seed=seed + 1000 + i)})
    best = max(rows, key=lambda r: (r["logistic_val"], -r["layer"]))
    rnd = lambda v: round(float(v), 4)  # noqa: E731
    return {"dataset": dataset, "n": len(items), "n_test": len(te), "layer": best["layer"], "ccs": rnd(best["ccs"]),
            "logistic": rnd(best["logistic"]), "zero_shot": rnd(zero_shot), "random": rnd(best["random"]),
            "by_layer": [{k: rnd(v) if k != "layer" else v for k, v in r.items()} for r in rows]}


def ccs_figure(results: list[dict[str, Any]]) -> Any:
    """CCS / logistic / random test accuracy by layer, one panel per dataset."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(results), 3.2))
    for j, res in enumerate(results):
        ax = fig.add_subplot(1, len(results), j + 1)
        layers = [r["layer"] for r in res["by_layer"]]
        for key, style in (("ccs", "o-"), ("logistic", "s-"), ("random", "x:")):
            ax.plot(layers, [r[key] for r in res["by_layer"]], style, label=key, markersize=3)
        ax.axhline(res["zero_shot"], color="grey", ls="--", label="zero-shot")
        ax.set_ylim(0.4, 1.02)
        ax.set_title(res["dataset"])
        ax.set_xlabel("layer")
        if j == 0:
            ax.set_ylabel("test accuracy")
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


__all__ = ["ccs_figure", "ccs_study"]
