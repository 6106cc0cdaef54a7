"""An independent, one-edge-at-a-time edge patcher for sequential models without norms (the ground truths'
models), so the truths can be checked before and apart from ``circuits.discover``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def all_edges(model) -> list[str]:
    """Every edge of the graph of a sequential (non-parallel) multi-head model."""
    cfg = model.cfg
    senders: list[tuple[str, float]] = [("input", -1.0)]
    receivers: list[tuple[str, float]] = []
    for layer in range(cfg.n_layers):
        for h in range(cfg.n_heads):
            senders.append((f"a{layer}.h{h}", layer))
            receivers += [(f"a{layer}.h{h}<{c}>", layer) for c in "qkv"]
        if cfg.mlp is not None:
            senders.append((f"m{layer}", layer + 0.5))
            receivers.append((f"m{layer}", layer + 0.5))
    receivers.append(("logits", float(cfg.n_layers)))
    return [f"{s}->{r}" for r, rl in receivers for s, sl in senders if sl < rl]


def _sender_names(model) -> list[str]:
    names = ["hook_embed"] + (["hook_pos_embed"] if "hook_pos_embed" in model.hook_dict else [])
    for layer in range(model.cfg.n_layers):
        names.append(f"blocks.{layer}.attn.hook_result")
        if model.cfg.mlp is not None:
            names.append(f"blocks.{layer}.hook_mlp_out")
    return names


def _sender(cache, name: str) -> Tensor:
    if name == "input":
        return cache["hook_embed"] + cache.get("hook_pos_embed", 0)
    if name.startswith("a"):
        layer, head = name[1:].split(".h")
        return cache[f"blocks.{layer}.attn.hook_result"][:, :, int(head)]
    return cache[f"blocks.{name[1:]}.hook_mlp_out"]


def edge_effects(model, clean: Tensor, corrupted: Tensor, metric: Callable[[Tensor], Tensor],
                 edges: list[str]) -> dict[str, float]:
    """Mean metric change when each edge alone carries the corrupted sender's output (clean elsewhere)."""
    names = _sender_names(model)
    with torch.no_grad():
        base, cache_c = model.run_with_cache(clean, names=names)
        _, cache_k = model.run_with_cache(corrupted, names=names)
        m0 = float(metric(base).mean())
        out: dict[str, float] = {}
        for edge in edges:
            snd, rcv = edge.split("->")
            delta = _sender(cache_k, snd) - _sender(cache_c, snd)
            if rcv == "logits":
                hook, head = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", None
            elif rcv.startswith("m"):
                hook, head = f"blocks.{rcv[1:]}.hook_mlp_in", None
            else:
                layer, rest = rcv[1:].split(".h")
                head, kind = int(rest[:-3]), rest[-2]
                hook = f"blocks.{layer}.hook_{kind}_input"

            def patch(x: Tensor, hook, delta=delta, head=head) -> Tensor:
                x = x.clone()
                if head is None:
                    return x + delta
                x[:, :, head] += delta
                return x

            with model.hooks(fwd=[(hook, patch)]):
                out[edge] = float(metric(model(clean)).mean()) - m0
    return out
