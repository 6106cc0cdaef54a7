"""k-sparse probing on dictionary latents vs neurons vs PCA components at equal k (SAEBench's sparse probing).

Same compound-word examples as ``compound_words`` (B right after A vs B after anything else, 48-token
windows, splits by source document), but at one layer: the dictionary's. One forward pass collects the
dictionary's hook (e.g. ``blocks.6.hook_resid_post``) and the same layer's MLP neurons
(``blocks.6.mlp.hook_post``); then, for k in ``KS``, a logistic probe on the top-k of a ranking (mean
difference by default, fit on the training split) of

* ``latents``: the dictionary's latent activations of the hook's activations,
* ``neurons``: the MLP neurons of the same layer,
* ``pca``: the hook's principal components (fit on the training split),
* ``resid``: the hook's raw basis dimensions,

scored by test F1. If a dictionary has found the compound as a feature, ``latents`` should win at small k.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mechscope.errors import ConfigError
from mechscope.experiments.compound_words.run import (
    COMPOUNDS,
    KS,
    compound_corpus,
    compound_examples,
    compound_tokens,
    windows,
)

BASES = ("latents", "neurons", "pca", "resid")


def _layer_of(hook: str) -> int:
    parts = hook.split(".")
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
        raise ConfigError(f"the dictionary's hook {hook!r} is not a block hook (blocks.L....); sparse probing needs "
                          f"one layer to compare its neurons")
    return int(parts[1])


def probe_dictionary_compound(model: Any, dictionary: Any, tokens: np.ndarray, docs: np.ndarray, a: int, b: int, *,
                              neuron_hook: str | None = None, ranking: str = "mean_diff", seed: int = 0,
                              batch_size: int = 16) -> dict[str, Any]:
    """Test F1 by k for each basis (see the module docstring), plus the top latents and neurons."""
    from mechscope.probes.dataset import collect, split_by_group
    from mechscope.probes.sparse import f1_by_k

    hook = dictionary.cfg.hook_name
    layer = _layer_of(hook)
    nhook = neuron_hook or f"blocks.{layer}.mlp.hook_post"
    positions, labels = compound_examples(tokens, docs, a, b, seed=seed)
    if len(labels) < 20:
        raise ConfigError(f"only {len(labels) // 2} positive examples of this compound in the corpus; need >= 10")
    ds = collect(model, [hook, nhook], windows(tokens, positions), torch.full((len(labels),), -1),
                 torch.from_numpy(labels), groups=torch.from_numpy(docs[positions]), batch_size=batch_size)
    tr, _, te = split_by_group(ds.groups, (0.6, 0.1, 0.3), seed=seed)
    y = ds.labels
    x = ds.acts[hook].float()
    with torch.no_grad():
        lat = dictionary.encode(x.to(dictionary.W_enc.dtype)).float()
    mu = x[tr].mean(0)
    _, _, v = torch.linalg.svd(x[tr] - mu, full_matrices=False)
    bases = {"latents": lat, "neurons": ds.acts[nhook].float(), "pca": (x - mu) @ v[: max(KS)].T, "resid": x}
    out: dict[str, Any] = {"layer": layer, "hook": hook, "neuron_hook": nhook, "n_examples": len(labels),
                           "n_test": len(te)}
    for name, z in bases.items():
        res = f1_by_k(z[tr], y[tr], z[te], y[te], KS, ranking)  # type: ignore[arg-type]
        out[f"f1_at_k_{name}"] = {str(k): round(res[k][0], 4) for k in KS}
        if name in ("latents", "neurons"):
            out[f"top_{name}"] = [int(i) for i in res[max(KS)][1][:5]]
    out["f1_at_k"] = out["f1_at_k_latents"]
    fired = (lat[:, out["top_latents"][0]] > 0).float()
    out["top_latent_fires"] = {"positives": round(float(fired[y == 1].mean()), 4),
                               "negatives": round(float(fired[y == 0].mean()), 4)}
    return out


def run(model_name: str | Any, dictionary_dir: str | Path, *, corpus: str = "stdlib-docs",
        max_documents: int | None = None, compounds: tuple[str, ...] = COMPOUNDS, ranking: str = "mean_diff",
        out: Path | None = None, seed: int = 0) -> dict[str, Any]:
    """``{"results": [{"feature", "layer", "f1_at_k" (latents), "f1_at_k_neurons", "f1_at_k_pca", ...}]}``."""
    from mechscope.dictionaries.io import load

    model: Any = model_name
    if isinstance(model_name, str):
        from mechscope.cli.common import load_model

        model = load_model(model_name)
    dictionary = load(dictionary_dir, d_in=int(model.cfg.d_model)).eval()
    model.hook_names([dictionary.cfg.hook_name])  # an unknown hook -> HookNameError with close matches
    tokens, docs = compound_corpus(corpus, max_documents)
    tok = model.tokenizer
    results = []
    for comp in compounds:
        a, b = compound_tokens(tok, comp)
        results.append({"feature": comp, **probe_dictionary_compound(model, dictionary, tokens, docs, a, b,
                                                                     ranking=ranking, seed=seed)})
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        f1_figure(results).savefig(out / "sparse_dictionary_f1_vs_k.png", dpi=110)
    mean = {name: {str(k): round(float(np.mean([r[f"f1_at_k_{name}"][str(k)] for r in results])), 4) for k in KS}
            for name in BASES}
    return {"model": model_name if isinstance(model_name, str) else "model", "dictionary": str(dictionary_dir),
            "corpus": corpus, "ranking": ranking, "mean_f1_at_k": mean, "results": results}


def f1_figure(results: list[dict[str, Any]]) -> Any:
    """Mean test F1 over the compounds against k, one line per basis; thin lines per compound."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    for name, style in zip(BASES, ("o-", "s-", "^--", "x:")):
        ys = np.array([[r[f"f1_at_k_{name}"][str(k)] for k in KS] for r in results])
        line, = ax.plot(KS, ys.mean(0), style, label=f"{name} (mean of {len(results)})")
        for row in ys:
            ax.plot(KS, row, "-", color=line.get_color(), alpha=0.15, lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("test F1")
    ax.set_title(f"compound words at layer {results[0]['layer']}: dictionary latents vs neurons vs PCA")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


__all__ = ["BASES", "f1_figure", "probe_dictionary_compound", "run"]
