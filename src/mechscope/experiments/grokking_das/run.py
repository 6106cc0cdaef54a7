"""DAS on a grokked modular-addition transformer: where do ``a``, ``b`` and ``(a + b) mod p`` live?

Two high-level causal models over the inputs a, b of the ``a b =`` prompt, both with output ``S = (a+b) mod p``:

* ``sum``: one intermediate variable S; intervening on it sets the answer to the source's sum;
* ``operands``: the inputs a and b themselves as variables (intervening on a gives ``(a' + b) mod p``).

For every hook at the ``=`` position (``blocks.0.hook_resid_mid`` = after attention, ``blocks.0.mlp.hook_post``
= the neurons, ``blocks.0.hook_resid_post`` = what the unembedding reads) DAS learns a rotation whose first
``dims`` coordinates play the variable's role (``dims`` = 2 × the number of key frequencies by default: one
cos/sin pair per key frequency, the size of the Fourier circuit). Next to it, two subspaces of the same
dimension that are not trained on interchanges: a Haar-random rotation (the baseline) and the *Fourier
subspace* (the activation patterns of cos/sin(w_k v) for the key frequencies k: the least-squares map from
those features to the activations, over all p² pairs): if the network computes what Nanda et al. describe,
the Fourier subspace of S at the MLP output should already swap the answer. (The *readout* directions of a
probe predicting cos/sin(w_k v) from the activations do not: regression filters differ from the directions
the signal is written along, and swapping along filters left the answer unchanged, IIA = the random
rotation's.) ``overlap`` = mean squared cosine of the principal angles between DAS's subspace and the
Fourier subspace (1 = the same subspace, ≈ k/d for unrelated ones).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechscope.abstraction.causal_model import CausalModel, counterfactual_dataset
from mechscope.abstraction.das import (
    DASConfig,
    InterchangeData,
    from_counterfactuals,
    iia,
    random_rotation,
    train_das,
)
from mechscope.abstraction.interchange import block_masks, capture, rotation_from_basis
from mechscope.errors import ConfigError, ShapeError

HOOKS = ("blocks.0.hook_resid_mid", "blocks.0.mlp.hook_post", "blocks.0.hook_resid_post")
MODELS = {"sum": ["S"], "operands": ["a", "b"]}


def causal_model(p: int) -> CausalModel:
    """Inputs a, b; S = (a + b) mod p is the output."""
    return CausalModel(values={"a": list(range(p)), "b": list(range(p)), "S": list(range(p))},
                       parents={"S": ["a", "b"]}, mechanisms={"S": lambda a, b: (a + b) % p}, output="S")


def interchange_data(p: int, variables: list[str], n: int, seed: int) -> InterchangeData:
    """``n`` counterfactuals intervening on each variable set of the causal model in turn (single variables,
    then all together), each variable from its own random source pair."""
    sets = [[v] for v in variables] + ([list(variables)] if len(variables) > 1 else [])

    def sample(rng: random.Random) -> dict[str, int]:
        return {"a": rng.randrange(p), "b": rng.randrange(p)}

    cfs = counterfactual_dataset(causal_model(p), sample, n, sets, seed=seed)
    return from_counterfactuals(cfs, variables, lambda x: torch.tensor([x["a"], x["b"], p]))


def fourier_subspace(acts: Float[Tensor, "n d"], values: Int[Tensor, " n"], p: int,
                     keys: list[int]) -> Float[Tensor, "d k"]:
    """Orthonormal columns spanning the activation patterns of cos/sin(2π k v / p), k in ``keys``: the
    least-squares ``A`` in ``acts ≈ features · A`` (both centred), ``values`` [n] the variable per row."""
    if not keys:
        raise ConfigError("fourier_subspace needs at least one key frequency")
    if values.shape[0] != acts.shape[0]:
        raise ShapeError(f"values has {values.shape[0]} rows, the activations {acts.shape[0]}")
    w = 2 * math.pi * torch.tensor(keys, dtype=torch.float64) / p
    ang = values.to(torch.float64)[:, None] * w[None, :]
    targets = torch.cat([torch.cos(ang), torch.sin(ang)], dim=1)
    x = acts.to(torch.float64)
    pattern = torch.linalg.lstsq(targets - targets.mean(0), x - x.mean(0), driver="gelsd").solution  # [2k d]
    q, _ = torch.linalg.qr(pattern.T)
    return q.to(acts.dtype)


def das_grokking(model: Any, p: int, keys: list[int], *, hooks: tuple[str, ...] = HOOKS,
                 models: tuple[str, ...] = ("sum", "operands"), dims: int | None = None, n_train: int = 4000,
                 n_test: int = 1000, epochs: int = 4, lr: float = 1e-2, seed: int = 0) -> list[dict[str, Any]]:
    """One row per (hook, causal model): IIA of DAS, of the Fourier subspace and of a random rotation."""
    unknown = set(models) - set(MODELS)
    if unknown:
        raise ConfigError(f"unknown causal models {sorted(unknown)}; choose from {sorted(MODELS)}")
    k = dims if dims is not None else 2 * len(keys)
    pairs = torch.stack([torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p),
                         torch.full((p * p,), p)], dim=1)
    values = {"a": pairs[:, 0], "b": pairs[:, 1], "S": (pairs[:, 0] + pairs[:, 1]) % p}
    rows = []
    for name in models:
        variables = MODELS[name]
        train = interchange_data(p, variables, n_train, seed + 1)
        test = interchange_data(p, variables, n_test, seed + 2)
        for hook in hooks:
            acts = capture(model, pairs, hook)[:, -1]
            d = acts.shape[-1]
            masks = block_masks(d, [k] * len(variables))
            res = train_das(model, hook, train, test, DASConfig(dims=(k,) * len(variables), epochs=epochs, lr=lr,
                                                                seed=seed), positions=[-1])
            basis = torch.cat([fourier_subspace(acts, values[v], p, keys)[:, :k] for v in variables], dim=1)
            probe_rot = rotation_from_basis(basis, seed=seed)
            q_basis, _ = torch.linalg.qr(basis)
            overlap = float((res.rotation[:, : k * len(variables)].T @ q_basis).pow(2).sum() / basis.shape[1])
            rand = random_rotation(d, seed=seed + 100)
            rows.append({"hook": hook, "causal_model": name, "variables": variables, "subspace_dim": k,
                         "d": d, "iia": round(res.iia, 4),
                         "iia_fourier": round(iia(model, hook, test, probe_rot, masks, positions=[-1]), 4),
                         "overlap": round(overlap, 3),
                         "iia_random_rotation": round(iia(model, hook, test, rand, masks, positions=[-1]), 4)})
    return rows


def run(run_dir: str | Path, *, dims: int | None = None, hooks: tuple[str, ...] = HOOKS, seed: int = 0,
        n_train: int = 4000, epochs: int = 4) -> dict[str, Any]:
    """Load a grokking run, find its key frequencies, align both causal models at every hook."""
    import time

    from mechscope.analysis.fourier import embedding_freq_norms, key_frequencies
    from mechscope.experiments.grokking import answer_logits, load_run

    t0 = time.perf_counter()
    cfg, model, data = load_run(run_dir)
    model.eval()
    keys = key_frequencies(embedding_freq_norms(model.W_E[: cfg.p]))
    with torch.no_grad():
        acc = float((answer_logits(model, data.tokens).argmax(-1) == data.labels).float().mean())
    torch.manual_seed(seed)
    rows = das_grokking(model, cfg.p, keys, hooks=hooks, dims=dims, seed=seed, n_train=n_train, epochs=epochs)
    best = max((r for r in rows if r["causal_model"] == "sum"), key=lambda r: r["iia"])
    return {"task": "grokking", "run_dir": str(run_dir), "p": cfg.p, "accuracy_all_pairs": round(acc, 4),
            "key_frequencies": keys, "hook": best["hook"], "layer": 0, "iia": best["iia"],
            "iia_random_rotation": best["iia_random_rotation"], "iia_fourier": best["iia_fourier"],
            "subspace_dim": best["subspace_dim"], "by_hook": rows, "seconds": round(time.perf_counter() - t0, 1)}


def iia_figure(res: dict[str, Any]) -> Any:
    """Grouped bars: IIA of DAS / Fourier probe / random rotation per (hook, causal model)."""
    from matplotlib.figure import Figure

    rows = res["by_hook"]
    fig = Figure(figsize=(7, 3.4))
    ax = fig.add_subplot()
    x = torch.arange(len(rows)).float()
    for i, (key, label) in enumerate([("iia", "DAS"), ("iia_fourier", "Fourier subspace"),
                                      ("iia_random_rotation", "random rotation")]):
        ax.bar((x + (i - 1) * 0.27).tolist(), [r[key] for r in rows], width=0.27, label=label)
    ax.set_xticks(x.tolist(), [f"{r['hook'].split('.', 2)[-1]}\n{r['causal_model']}" for r in rows], fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("IIA")
    ax.set_title(f"grokked a+b mod {res['p']}: {res['subspace_dim']}-dim subspaces at '='")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


__all__ = ["HOOKS", "MODELS", "causal_model", "das_grokking", "fourier_subspace", "iia_figure",
           "interchange_data", "run"]
