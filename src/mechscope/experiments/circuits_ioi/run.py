"""Case study: the IOI circuit of SmolLM2 found automatically (EAP-IG), checked with ``evaluate``.

Steps: IOI prompts with ABC corruptions (``data/tasks/ioi.py``, one template so positions align), the
per-prompt logit difference ``logit(IO) - logit(S)`` at the last position, ``discover`` with the chosen
method, the top ``fraction`` of edges as the circuit, its normalised recovery with every other edge
patched, a faithfulness curve, and the heads the circuit contains compared with the heads ``docs/ioi.md``
found by patching and direct logit attribution. ``run`` writes ``summary.json``, ``circuit.svg`` and
``faithfulness.png`` into ``out_dir``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import ConfigError

# heads docs/ioi.md reports for SmolLM2 (layer.head), by role
IOI_HEADS: dict[str, tuple[str, ...]] = {
    "name_movers": ("a23.h3", "a23.h0", "a29.h1", "a28.h1"),
    "negative": ("a29.h0", "a24.h4", "a23.h2"),
    "backup": ("a24.h4", "a29.h0", "a24.h5", "a28.h1"),
    "duplicate_token": ("a8.h1", "a9.h2", "a14.h3", "a5.h6", "a2.h4"),
    "induction": ("a17.h4", "a17.h5", "a18.h4"),
}


@dataclass(frozen=True, kw_only=True)
class CircuitIOIConfig:
    """What the case study runs."""

    out_dir: str = "runs/circuits_ioi"
    """Where summary.json and the pictures go."""
    n_prompts: int = 32
    """IOI prompts (one template, half ABBA, half BABA)."""
    template: int = 0
    """Template index (``data/tasks/ioi.py``)."""
    method: str = "eap-ig"
    """Discovery method."""
    steps: int = 5
    """EAP-IG steps."""
    fraction: float = 0.05
    """Circuit size: this fraction of all edges."""
    selection: str = "signed"
    """How the circuit is chosen from the scores (``circuits.select``: abs | signed | pruned | greedy);
    docs/circuits.md compares them on this task."""
    curve: tuple[float, ...] = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
    """Faithfulness-curve sizes (empty: skip)."""
    seed: int = 0
    """Seed of the prompt draw."""

    def __post_init__(self) -> None:
        if self.n_prompts < 1:
            raise ConfigError(f"n_prompts must be >= 1, got {self.n_prompts}")
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction}")
        from mechscope.circuits.select import SELECTIONS

        if self.selection not in SELECTIONS:
            raise ConfigError(f"selection must be one of {list(SELECTIONS)}, got {self.selection!r}")


def ioi_task(model: Any, n: int, template: int = 0, seed: int = 0) -> tuple[Tensor, Tensor, Any]:
    """(clean, corrupted, metric): IOI pairs and the per-prompt ``logit(IO) - logit(S)`` at the readout."""
    from mechscope.data.tasks.ioi import ioi_pairs

    pairs = ioi_pairs(model.tokenizer, n, template=template, seed=seed)
    answer, wrong = pairs.answer, pairs.wrong

    def logit_diff(logits: Tensor) -> Tensor:
        last = logits[:, -1]
        return (last.gather(-1, answer[:, None]) - last.gather(-1, wrong[:, None]))[:, 0]

    return pairs.clean, pairs.corrupted, logit_diff


def head_report(scores: Any, circuit: Any) -> dict[str, Any]:
    """Which of ``IOI_HEADS`` the circuit contains, each head's node score rank, and the top heads."""
    nodes = scores.node_scores()
    heads = sorted((n for n in nodes if n.startswith("a")), key=lambda n: -abs(nodes[n]))
    rank = {n: i + 1 for i, n in enumerate(heads)}
    direct = scores.to_dict()
    kept = circuit.nodes()
    roles = {role: [{"head": h, "in_circuit": h in kept, "node_rank": rank.get(h), "node_score": nodes.get(h),
                     "direct_to_logits": direct.get(f"{h}->logits")} for h in hs]
             for role, hs in IOI_HEADS.items()}
    to_logits = sorted(((e, v) for e, v in direct.items() if e.endswith("->logits") and e.split("->")[0] in kept),
                       key=lambda kv: -abs(kv[1]))
    return {"roles": roles, "top_heads_by_node_score": [[h, nodes[h]] for h in heads[:15]],
            "top_direct_to_logits_in_circuit": [[e, v] for e, v in to_logits[:12]],
            "heads_in_circuit": sum(1 for n in kept if n.startswith("a") and ".h" in n)}


def run(cfg: CircuitIOIConfig, model: Any = None) -> dict[str, Any]:
    """Discover, evaluate and draw the IOI circuit; write the run directory; return the summary."""
    import mechscope
    from mechscope.circuits.discover import discover
    from mechscope.circuits.draw import circuit_svg, faithfulness_figure, write_text
    from mechscope.circuits.evaluate import evaluate, faithfulness_curve
    from mechscope.circuits.select import select
    from mechscope.viz.report import save_figure

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else mechscope.load("smollm2-135m").eval()
    clean, corrupted, metric = ioi_task(model, cfg.n_prompts, cfg.template, cfg.seed)
    opts: dict[str, Any] = {"steps": cfg.steps, "chunk": 1} if cfg.method == "eap-ig" else {}
    t0 = time.perf_counter()
    scores = discover(model, clean, corrupted, metric, method=cfg.method, **opts)
    t_discover = time.perf_counter() - t0
    n_total = len(scores.graph.edges)
    circuit = select(scores, int(cfg.fraction * n_total), cfg.selection)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    with torch.no_grad():
        recovery = evaluate(model, clean, corrupted, metric, circuit.edges)
        curve = (faithfulness_curve(model, clean, corrupted, metric, scores, cfg.curve, chunk=4,
                                    selection=cfg.selection) if cfg.curve else None)  # type: ignore[arg-type]
    t_eval = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "config": asdict(cfg), "method": cfg.method, "selection": cfg.selection, "n_edges_total": n_total, "n_edges_kept": len(circuit),
        "fraction_kept": len(circuit) / n_total, "faithfulness": recovery,
        "clean_logit_diff": scores.info["clean"], "corrupted_logit_diff": scores.info["corrupted"],
        "wall_seconds_discover": t_discover, "wall_seconds_evaluate": t_eval, "threads": torch.get_num_threads(),
        "curve": curve.to_dict() if curve is not None else None, "heads": head_report(scores, circuit),
        "top_edges": [[e, v] for e, v in scores.ranked(40)],
    }
    top = scores.top(min(len(circuit), 120))
    write_text(circuit_svg(top, scores, title=f"SmolLM2 IOI, {cfg.method}: top {len(top)} of {len(circuit)} "
                          f"circuit edges (recovery of the full circuit {recovery:.2f})"), out / "circuit.svg")
    if curve is not None:
        save_figure(faithfulness_figure({cfg.method: curve}, "SmolLM2 IOI faithfulness"), out / "faithfulness.png")
    tmp = out / "summary.json.tmp"
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out / "summary.json")
    return summary


__all__ = ["IOI_HEADS", "CircuitIOIConfig", "head_report", "ioi_task", "run"]
