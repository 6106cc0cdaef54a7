"""DAS on SmolLM2's indirect-object identification: where is "which name is the subject"?

High-level model: the prompt names two people in order (N1, N2); the variable ``POS`` says which of them is
the subject S (the repeated one: ABBA prompts have S second, BABA prompts S first), and the answer is the
*other* name. A counterfactual pairs a base prompt with a source prompt (other names, same template); if
their ``POS`` differs, setting the base's ``POS`` to the source's value makes the answer the base's S (the
answer flips); if it is the same, the answer stays the base's IO. Half of the pairs flip.

The network side: the residual stream after block L at one position (S2, the repeated name, or END, the
last token), one rotated subspace of ``dims`` coordinates. The output is read as the two-way choice
between the base's IO and S tokens (``logit(IO)`` vs ``logit(S)``), so IIA is the share of pairs where
the intervened model prefers the name the high-level model predicts. ``iia_flip`` restricts to the pairs
where the answer must flip (a subspace that does nothing scores 0 there, chance is 0.5 overall). Training
is cheap because ``abstraction.tail.ResidualTail`` reruns only the blocks after L on the positions from
the intervened one on. Prompts are split by prompt: test pairs use only held-out prompts.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.abstraction.das import DASConfig, InterchangeData, iia, random_rotation, train_das
from mechscope.abstraction.interchange import block_masks
from mechscope.abstraction.tail import ResidualTail
from mechscope.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class IOIDASConfig:
    """Prompts, layers, subspace and DAS training."""

    n_prompts: int = 64
    """Prompts from one template, alternating ABBA / BABA."""
    template: int = 0
    test_frac: float = 0.25
    """Share of prompts held out (test pairs are built from them only)."""
    sources_per_base: int = 4
    """Counterfactual pairs per base prompt (half with the other name order)."""
    layers: tuple[int, ...] = (8, 14, 20, 24)
    positions: tuple[str, ...] = ("S2", "end")
    dims: int = 2
    epochs: int = 6
    batch_size: int = 32
    lr: float = 5e-2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_prompts < 8 or not 0 < self.test_frac < 1 or self.sources_per_base < 2 or self.dims < 1:
            raise ConfigError(f"IOIDASConfig needs n_prompts >= 8, 0 < test_frac < 1, sources_per_base >= 2 and "
                              f"dims >= 1; got {self}")
        bad = set(self.positions) - {"S2", "end", "IO", "S1"}
        if bad:
            raise ConfigError(f"positions {sorted(bad)} unknown; choose from S2, end, IO, S1")


def counterfactual_pairs(abba: list[bool], ids: list[int], k: int, rng: random.Random) -> tuple[Tensor, Tensor, Tensor]:
    """(base ids, source ids, labels): ``k`` sources per base among ``ids``, half with the other order
    (label 1: the answer flips to the base's S), half with the same order (label 0: stays IO)."""
    base, src, lab = [], [], []
    for i in ids:
        same = [j for j in ids if j != i and abba[j] == abba[i]]
        other = [j for j in ids if abba[j] != abba[i]]
        if not same or not other:
            raise ConfigError("counterfactual pairs need prompts of both name orders (ABBA and BABA)")
        for t in range(k):
            flip = t % 2 == 0
            base.append(i)
            src.append(rng.choice(other if flip else same))
            lab.append(int(flip))
    return torch.tensor(base), torch.tensor(src), torch.tensor(lab)


def run(model: Any, cfg: IOIDASConfig | None = None) -> dict[str, Any]:
    """IIA of DAS and of a random rotation per (position, layer); the headline is the best DAS row."""
    from mechscope.data.tasks.ioi import ioi_pairs

    cfg = cfg or IOIDASConfig()
    if getattr(model, "tokenizer", None) is None:
        raise ConfigError("IOI DAS needs a model with a tokenizer")
    bad = [lay for lay in cfg.layers if not 0 <= lay < model.cfg.n_layers]
    if bad:
        raise ConfigError(f"layers {bad} out of range: need 0 <= L < "
                          f"{model.cfg.n_layers}")
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    pp = ioi_pairs(model.tokenizer, cfg.n_prompts, template=cfg.template, order="mixed", seed=cfg.seed)
    tokens = pp.clean
    abba = [bool(pp.roles["IO"][i] < pp.roles["S1"][i]) for i in range(cfg.n_prompts)]
    candidates = torch.stack([pp.answer, pp.wrong], dim=1)  # [n 2]: IO, S
    with torch.no_grad():
        clean = model(tokens)[:, -1].gather(1, candidates)
    acc = float((clean[:, 0] > clean[:, 1]).float().mean())
    rng = random.Random(cfg.seed)
    test_ids, train_ids = [], []
    for group in ([i for i in range(cfg.n_prompts) if abba[i]], [i for i in range(cfg.n_prompts) if not abba[i]]):
        rng.shuffle(group)  # held out per name order, so both splits have both orders
        n_test = max(2, round(cfg.test_frac * len(group)))
        test_ids += group[:n_test]
        train_ids += group[n_test:]
    test_ids, train_ids = sorted(test_ids), sorted(train_ids)
    tr = counterfactual_pairs(abba, train_ids, cfg.sources_per_base, rng)
    te = counterfactual_pairs(abba, test_ids, cfg.sources_per_base, rng)
    train, test = InterchangeData(tr[0], [tr[1]], tr[2]), InterchangeData(te[0], [te[1]], te[2])
    flip = te[2] == 1
    test_flip = InterchangeData(te[0][flip], [te[1][flip]], te[2][flip])
    rows: list[dict[str, Any]] = []
    for pos_name in cfg.positions:
        pos = pp.roles[pos_name]
        if not bool((pos == pos[0]).all()):
            raise ConfigError(f"position {pos_name} differs between prompts; use one template")
        start = int(pos[0])
        for layer in cfg.layers:
            tail = ResidualTail(model, tokens, layer, start, candidates)
            res = train_das(tail, "hook_resid", train, test,
                            DASConfig(dims=(cfg.dims,), epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                      seed=cfg.seed, partial=True), positions=[0])
            d = res.rotation.shape[0]
            rand, masks = random_rotation(d, seed=cfg.seed + 100 + layer), block_masks(d, [cfg.dims])
            full = torch.eye(d)
            rows.append({
                "position": pos_name, "layer": layer, "hook": f"blocks.{layer}.hook_resid_post", "subspace_dim": cfg.dims,
                "iia": round(res.iia, 4), "iia_flip": round(iia(tail, "hook_resid", test_flip, res.rotation, masks,
                                                                positions=[0]), 4),
                "iia_random_rotation": round(iia(tail, "hook_resid", test, rand, masks, positions=[0]), 4),
                "iia_flip_random_rotation": round(iia(tail, "hook_resid", test_flip, rand, masks, positions=[0]), 4),
                "iia_full_residual": round(iia(tail, "hook_resid", test, full, torch.ones(1, d), positions=[0]), 4),
                "final_loss": round(sum(res.losses[-5:]) / len(res.losses[-5:]), 4)})
    best = max(rows, key=lambda r: (r["iia"], -r["layer"]))
    return {"task": "ioi", "template": cfg.template, "n_prompts": cfg.n_prompts, "n_train_pairs": len(train),
            "n_test_pairs": len(test), "clean_accuracy": round(acc, 4), "position": best["position"],
            "layer": best["layer"], "hook": best["hook"], "iia": best["iia"], "iia_flip": best["iia_flip"],
            "iia_random_rotation": best["iia_random_rotation"], "subspace_dim": cfg.dims, "by_layer": rows,
            "seconds": round(time.perf_counter() - t0, 1), "config": asdict(cfg)}


def iia_figure(res: dict[str, Any]) -> Any:
    """IIA by layer, one line per position, DAS (solid) vs random rotation (dashed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.add_subplot()
    for pos in dict.fromkeys(r["position"] for r in res["by_layer"]):
        rows = [r for r in res["by_layer"] if r["position"] == pos]
        line = ax.plot([r["layer"] for r in rows], [r["iia"] for r in rows], "o-", label=f"DAS at {pos}")[0]
        ax.plot([r["layer"] for r in rows], [r["iia_random_rotation"] for r in rows], "x--", color=line.get_color(),
                label=f"random rotation at {pos}")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("layer (residual after block)")
    ax.set_ylabel("IIA")
    ax.set_title(f"SmolLM2 IOI: 'which name is S', {res['subspace_dim']}-dim subspace")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


__all__ = ["IOIDASConfig", "counterfactual_pairs", "iia_figure", "run"]
