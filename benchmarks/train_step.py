"""Training-step time of the induction experiment's two-layer attention-only model (its default shape).

Rows: float32; bf16 autocast as shipped (matmuls in bf16, the fused attention kernel in float32 because torch's
bf16 CPU flash-attention backward is slower); bf16 autocast with bf16 attention (what autocast would do alone).
Each row: median seconds per AdamW update over ``--steps`` after warm-up, same process, rows interleaved by
round so background load hits them alike.

    .venv/bin/python benchmarks/train_step.py [--threads 2] [--d-head 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from _common import emit, machine

import mechscope.models.components.attention as attention
from mechscope.experiments.induction.config import InductionConfig, model_config
from mechscope.experiments.induction.run import _lm_loss
from mechscope.models.transformer import HookedTransformer


def _bf16_attention(qt: torch.Tensor, kt: torch.Tensor, vt: torch.Tensor, mask: torch.Tensor | None,
                    scale: float, gqa: bool) -> torch.Tensor:
    return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, is_causal=mask is None,
                                                            scale=scale, enable_gqa=gqa)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--d-head", type=int, default=32, help="per-head width; d_model = 8 heads x d_head")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="updates timed per row per round")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = InductionConfig(d_model=8 * args.d_head, d_head=args.d_head)
    model = HookedTransformer(model_config(cfg, 2, 2048), seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = torch.randint(0, 2048, (cfg.batch_size, cfg.n_ctx + 1), generator=torch.Generator().manual_seed(0))
    shipped = attention._sdpa

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = _lm_loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()

    rows: dict[str, tuple[bool, Callable[..., torch.Tensor]]] = {
        "float32": (False, shipped), "bf16 (attention in float32, shipped)": (True, shipped),
        "bf16 (attention in bf16)": (True, _bf16_attention)}
    times: dict[str, list[float]] = {k: [] for k in rows}
    for bf16, fn in rows.values():  # warm-up
        attention._sdpa = fn
        step(bf16)
    for _ in range(args.rounds):
        for name, (bf16, fn) in rows.items():
            attention._sdpa = fn
            t = time.perf_counter()
            for _ in range(args.steps):
                step(bf16)
            times[name].append((time.perf_counter() - t) / args.steps)
    attention._sdpa = shipped
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens = cfg.batch_size * cfg.n_ctx
    emit({"machine": machine(), "shape": {"d_model": cfg.d_model, "n_heads": cfg.n_heads, "d_head": cfg.d_head,
                                          "n_ctx": cfg.n_ctx, "batch": cfg.batch_size, "d_vocab": 2048},
          "seconds_per_update": {k: round(v, 4) for k, v in med.items()},
          "tokens_per_s": {k: round(tokens / v) for k, v in med.items()},
          "ratio_vs_float32": {k: round(v / med["float32"], 3) for k, v in med.items()}})


if __name__ == "__main__":
    main()
