"""Hierarchical equality (Geiger et al. 2023, DAS paper §4): does an MLP compute the two equality relations?

Input: four vectors w, x, y, z (each ``d_obj`` Gaussian numbers, concatenated); output: whether
``(w == x) == (y == z)``. The high-level causal model has inputs W, X, Y, Z, intermediate variables
``WX = (W == X)`` and ``YZ = (Y == Z)``, and output ``O = (WX == YZ)``. Each pair is equal with
probability 1/2 (an equal pair is one vector copied), so all four (WX, YZ) cases are balanced, and fresh
vectors are drawn for every example (the network cannot memorise objects).

``train_mlp`` trains a ``HookedMLP`` on the task; ``das_by_layer`` aligns WX and YZ with two rotated
subspaces (``dims`` coordinates each) of each hidden layer with DAS, and reports interchange-intervention
accuracy (IIA) next to the same-dimension random-rotation baseline.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mechscope.abstraction.causal_model import CausalModel, counterfactual_dataset
from mechscope.abstraction.das import DASConfig, from_counterfactuals, iia, random_rotation, train_das
from mechscope.models.toy.mlp import HookedMLP


@dataclass(frozen=True, kw_only=True)
class EqualityConfig:
    """The task, the MLP and the DAS run."""

    d_obj: int = 4
    """Numbers per object."""
    objects: str = "uniform"
    """``uniform``: fresh vectors in [-1, 1]^d_obj; ``onehot``: one of ``d_obj`` symbols, one-hot coded."""
    hidden: tuple[int, ...] = (32, 32, 32)
    steps: int = 3000
    batch_size: int = 256
    lr: float = 2e-3
    n_train: int = 24000
    """Counterfactuals DAS trains on (a third each: WX, YZ, both)."""
    n_test: int = 1500
    dims: int = 8
    """Rotated coordinates per variable."""
    das_epochs: int = 8
    das_lr: float = 2e-2
    seed: int = 0


def causal_model() -> CausalModel:
    return CausalModel(values={"W": [], "X": [], "Y": [], "Z": [], "WX": [0, 1], "YZ": [0, 1], "O": [0, 1]},
                       parents={"WX": ["W", "X"], "YZ": ["Y", "Z"], "O": ["WX", "YZ"]},
                       mechanisms={"WX": lambda w, x: int(w == x), "YZ": lambda y, z: int(y == z),
                                   "O": lambda a, b: int(a == b)}, output="O")


def sampler(d_obj: int, onehot: bool = False) -> Any:
    def sample(rng: random.Random) -> dict[str, Any]:
        def obj() -> tuple[float, ...]:
            if onehot:
                k = rng.randrange(d_obj)
                return tuple(float(i == k) for i in range(d_obj))
            return tuple(rng.uniform(-1, 1) for _ in range(d_obj))

        def other(a: tuple[float, ...]) -> tuple[float, ...]:
            b = obj()
            while b == a:
                b = obj()
            return b

        w, y = obj(), obj()
        x = w if rng.random() < 0.5 else other(w)
        z = y if rng.random() < 0.5 else other(y)
        return {"W": w, "X": x, "Y": y, "Z": z}

    return sample


def encode(inp: dict[str, Any]) -> Tensor:
    return torch.tensor(inp["W"] + inp["X"] + inp["Y"] + inp["Z"], dtype=torch.float32)


def _batch(n: int, d_obj: int, gen: torch.Generator, onehot: bool = False) -> tuple[Tensor, Tensor]:
    """A fresh training batch (vectorised version of ``sampler``): inputs [n 4·d_obj], labels [n]."""
    eq = torch.rand(n, 2, generator=gen) < 0.5
    if onehot:  # an unequal pair is always two different symbols
        ids = torch.randint(0, d_obj, (n, 4), generator=gen)
        ids[:, 1] = (ids[:, 0] + torch.randint(1, d_obj, (n,), generator=gen)) % d_obj
        ids[:, 3] = (ids[:, 2] + torch.randint(1, d_obj, (n,), generator=gen)) % d_obj
        v = F.one_hot(ids, d_obj).float()
    else:
        v = torch.rand(n, 4, d_obj, generator=gen) * 2 - 1
    v[:, 1] = torch.where(eq[:, :1], v[:, 0], v[:, 1])
    v[:, 3] = torch.where(eq[:, 1:], v[:, 2], v[:, 3])
    return v.flatten(1), (eq[:, 0] == eq[:, 1]).long()


def train_mlp(cfg: EqualityConfig) -> tuple[HookedMLP, float]:
    """The trained MLP and its accuracy on 4000 fresh examples."""
    model = HookedMLP(4 * cfg.d_obj, list(cfg.hidden), 2, seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    for _ in range(cfg.steps):
        x, y = _batch(cfg.batch_size, cfg.d_obj, gen, cfg.objects == "onehot")
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    x, y = _batch(4000, cfg.d_obj, gen, cfg.objects == "onehot")
    with torch.no_grad():
        acc = float((model(x).argmax(-1) == y).float().mean())
    return model.eval(), acc


def das_by_layer(model: HookedMLP, cfg: EqualityConfig, layers: list[int] | None = None) -> list[dict[str, Any]]:
    """Per hidden layer: DAS IIA for WX, YZ and both, and the random-rotation IIA of the same dimension."""
    cm, sample = causal_model(), sampler(cfg.d_obj, cfg.objects == "onehot")
    sets = [["WX"], ["YZ"], ["WX", "YZ"]]
    train = from_counterfactuals(counterfactual_dataset(cm, sample, cfg.n_train, sets, seed=cfg.seed + 1),
                                 ["WX", "YZ"], encode)
    tests = {"+".join(s): from_counterfactuals(counterfactual_dataset(cm, sample, cfg.n_test, [s], seed=cfg.seed + 2),
                                               ["WX", "YZ"], encode) for s in sets}
    all_test = from_counterfactuals(counterfactual_dataset(cm, sample, cfg.n_test, sets, seed=cfg.seed + 3),
                                    ["WX", "YZ"], encode)
    rows = []
    for layer in layers if layers is not None else range(model.n_layers):
        hook = f"blocks.{layer}.hook_post"
        res = train_das(model, hook, train, all_test, DASConfig(dims=(cfg.dims, cfg.dims), epochs=cfg.das_epochs,
                                                                batch_size=64, lr=cfg.das_lr, seed=cfg.seed))
        rand = random_rotation(res.rotation.shape[0], seed=cfg.seed + 10 + layer)
        row: dict[str, Any] = {"layer": layer, "hook": hook, "subspace_dim": cfg.dims, "iia": round(res.iia, 4)}
        for name, data in tests.items():
            row[f"iia_{name}"] = round(iia(model, hook, data, res.rotation, res.masks), 4)
            row[f"random_{name}"] = round(iia(model, hook, data, rand, res.masks), 4)
        row["iia_random_rotation"] = round(iia(model, hook, all_test, rand, res.masks), 4)
        rows.append(row)
    return rows


def run(cfg: EqualityConfig | None = None, layers: list[int] | None = None) -> dict[str, Any]:
    """Train the MLP, run DAS per layer; the headline is the layer with the best DAS IIA."""
    import time

    cfg = cfg or EqualityConfig()
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    model, acc = train_mlp(cfg)
    t1 = time.perf_counter()
    rows = das_by_layer(model, cfg, layers)
    t2 = time.perf_counter()
    best = max(rows, key=lambda r: r["iia"])
    return {"task": "hierarchical-equality", "model_accuracy": round(acc, 4), "layer": best["layer"],
            "iia": best["iia"], "iia_random_rotation": best["iia_random_rotation"], "subspace_dim": cfg.dims,
            "by_layer": rows, "train_seconds": round(t1 - t0, 1), "das_seconds": round(t2 - t1, 1),
            "config": asdict(cfg)}





def iia_figure(res: dict[str, Any]) -> Any:
    """IIA by layer: DAS vs the random rotation of the same dimension."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    rows = res["by_layer"]
    layers = [r["layer"] for r in rows]
    ax.plot(layers, [r["iia"] for r in rows], "o-", label="DAS")
    ax.plot(layers, [r["iia_random_rotation"] for r in rows], "x--", label="random rotation")
    ax.set_xticks(layers)
    ax.set_ylim(0.4, 1.02)
    ax.set_xlabel("hidden layer")
    ax.set_ylabel("IIA (WX, YZ, both)")
    ax.set_title(f"hierarchical equality, {res['subspace_dim']} dims per variable")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

__all__ = ["EqualityConfig", "causal_model", "das_by_layer", "encode", "iia_figure", "run", "sampler", "train_mlp"]
