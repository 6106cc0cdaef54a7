"""Linear probing sweep on a language model: is a statement true, read at its last token, layer by layer?

The statements are the balanced offline truth datasets (``data/tasks/truth.py``). All layers' activations
come from one forward pass per batch (``probes.dataset.collect``); splits keep every statement about one
landmark / country / operand on one side; the control task gives each *type* of the statement's last word
(the token before the final ".") a random label (Hewitt & Liang), so selectivity says how much of the
accuracy is more than memorising that word.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def truth_probe_sweep(model_name: str | Any, dataset: str, *, hook_kind: str = "hook_resid_post",
                      kind: str = "logistic", seed: int = 0, out: Path | None = None,
                      batch_size: int = 16, max_items: int | None = None) -> dict[str, Any]:
    """``{"model", "dataset", "n", "rows": [per-hook scores], "best": row}``; with ``out``: probe + figure saved."""
    from mechscope.data.tasks.truth import statements
    from mechscope.errors import ConfigError
    from mechscope.probes.dataset import ActivationDataset, collect, split_by_group
    from mechscope.probes.linear import ProbeConfig
    from mechscope.probes.sweep import accuracy_figure, layer_hooks, probe_sweep

    if isinstance(model_name, str):
        from mechscope.cli.common import load_model

        model = load_model(model_name)
    else:
        model = model_name
    if getattr(model, "tokenizer", None) is None:
        raise ConfigError("the probing sweep reads text: the model needs a tokenizer")
    items = statements(dataset, seed=seed)[:max_items]
    b = model.tokenizer.encode_batch([s.text for s in items], padding_side="left")
    y = torch.tensor([s.label for s in items])
    labels = y.float() if kind == "linear" else y
    hooks = layer_hooks(hook_kind, model.cfg.n_layers)
    ds = collect(model, hooks, b.tokens, torch.full((len(items),), -1), labels,
                 groups=torch.tensor([s.group for s in items]), attention_mask=b.attention_mask, batch_size=batch_size)
    # word type for the control task: the token before the final "." (the city, the number, ...); the last
    # token itself is "." everywhere, which would make the control task trivially constant
    ds = ActivationDataset(ds.acts, ds.labels, ds.groups, b.tokens[:, -2].clone())
    res = probe_sweep(ds, split_by_group(ds.groups, seed=seed), hooks, ProbeConfig(kind=kind))  # type: ignore[arg-type]
    rows = [r.as_dict() for r in res.rows]
    best = res.best()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        res.probes[best.hook].save(out / "best_probe")
        accuracy_figure(res, f"{dataset}: probe accuracy by layer").savefig(out / f"probe_{dataset}.png", dpi=110)
    return {"model": str(model_name) if isinstance(model_name, str) else model.cfg.architecture,
            "dataset": dataset, "n": len(items), "rows": rows, "best": best.as_dict()}


__all__ = ["truth_probe_sweep"]
