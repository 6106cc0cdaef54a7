"""Receiver-input gradients without per-head copies of the residual (the fast path of EAP and EAP-IG).

At ``m = 0`` the gradient of an edge mask is ``(patch_s - clean_s) · d metric / d input_r`` summed over
batch and positions, so the gradient methods need only two things: every sender's output and every
receiver's input gradient. The patchable forward gets the latter by materialising one copy of the residual
per query / key / value head (``hook_q_input`` ...) and normalising and projecting each copy alone; this
module runs the model's *ordinary* forward instead (one shared norm, one fused Q/K/V matmul) and recovers
each head's input gradient afterwards:

    d metric / d input_{q,h} = J_norm(resid)^T (d metric / d q_h · W_Q[h]^T)

(``q_h`` = ``hook_q``'s head ``h``, before rotary, so shortformer positions and rotary are handled by the
model's own backward). The norm's vector-Jacobian product runs once for every head at once on
``[rows pos heads d_model]`` (elementwise work), through the block's own ``ln1.normalize``, so every norm
kind in the registry works unchanged. MLP and logits receivers read their gradients directly
(``hook_mlp_in`` and the final residual). Only input gradients are taken (no weight gradients).

``embed_shift`` moves the embeddings (``blocks.0.hook_resid_pre``) of each variant by ``f_v · delta``: with
``delta = corrupted - clean`` embeddings this is exactly the patchable forward with the ``input`` row of the
masks set to ``f_v`` (EAP-IG's interpolated inputs), and ``f = 0`` is the clean forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from mechscope.circuits.graph import Graph
from mechscope.circuits.patchable import _as_group, _row_stable, head_results, head_z_hook, sender_groups


class _Capture:
    """Tensors gathered by the hooks of one forward."""

    def __init__(self) -> None:
        self.outputs: dict[str, Tensor] = {}
        self.resid: dict[int, Tensor] = {}
        self.grad_of: dict[str, Tensor] = {}


def edge_gradient(model: Any, graph: Graph, tokens: Int[Tensor, "batch pos"], metric: Callable[[Tensor], Tensor],
                  fixed: Callable[[list[Tensor]], Tensor] | Tensor, readout: int | None = -1,
                  fractions: tuple[float, ...] = (0.0,), delta: Tensor | None = None
                  ) -> tuple[Tensor, list[Tensor], Tensor]:
    """Sum over variants of ``d mean(metric) / d m`` at the masks the variants stand for, dense
    [n_senders n_receivers] (invalid cells hold junk; ``graph.gather`` drops them), as the patchable forward's
    ``fixed=`` gradient would give it.

    Args:
        fixed: differences [batch pos d_model n_senders] (``fixed_differences``), or a function building
            them from the sender outputs of this forward's first variant (so EAP needs no separate clean
            forward when that variant is the clean one).
        fractions: per variant, the fraction ``f`` of ``delta`` added to the embeddings.
        delta: [batch pos d_model] embedding shift (required when a fraction is nonzero).

    Returns: (dense gradient, sender outputs of variant 0 per group [batch pos n d_model], metric [V batch]).
    """
    V, B = len(fractions), tokens.shape[0]
    groups = sender_groups(graph)
    cap = _Capture()
    n_layers = graph.n_layers
    h, kv = graph.n_heads, graph.n_kv_heads
    f = torch.tensor(fractions, dtype=torch.float64)

    def sender(name: str) -> Callable[[Tensor, Any], None]:
        def hook(x: Tensor, hook: Any) -> None:
            cap.outputs[name] = x[:B].detach()
        return hook

    def resid_pre(layer: int) -> Callable[[Tensor, Any], Tensor | None]:
        def hook(x: Tensor, hook: Any) -> Tensor | None:
            if layer == 0:
                x = x.detach()
                if delta is not None and bool((f != 0).any()):
                    shift = f.to(x.dtype).view(V, 1, 1, 1) * delta.to(x.dtype).unsqueeze(0)
                    x = x + shift.reshape(x.shape)
                x = x.requires_grad_(True)
                cap.resid[0] = x
                return x
            cap.resid[layer] = x
            return None
        return hook

    def keep(name: str) -> Callable[[Tensor, Any], Tensor]:
        def hook(x: Tensor, hook: Any) -> Tensor:
            y = x.clone()  # its own node: the gradient of this use only (not of the residual's other uses)
            cap.grad_of[name] = y
            return y
        return hook

    fwd: list[tuple[str, Any]] = [(f"blocks.{L}.hook_resid_pre", resid_pre(L)) for L in range(n_layers)]
    # head outputs: capture the small hook_z and project after the forward (no grad), so the forward keeps
    # the fused W_O matmul instead of materialising hook_result [rows pos heads d_model] with autograd
    fwd += [(head_z_hook(g) if g.per_head else g.hook, sender(g.hook)) for g in groups]
    for L in range(n_layers):
        fwd += [(f"blocks.{L}.attn.hook_{k}", keep(f"{L}.{k}")) for k in ("q", "k", "v")]
        if graph.has_mlp:
            fwd.append((f"blocks.{L}.hook_mlp_in", keep(f"{L}.mlp")))
    with torch.enable_grad(), model.hooks(fwd=fwd):
        resid = model(tokens.repeat(V, 1) if V > 1 else tokens, stop_at_layer=n_layers)
        if readout is not None:
            resid = resid[:, [readout]]
        final = resid.clone()
        logits = _row_stable(lambda x: model.unembed(model.ln_final(x)), final)
        values = torch.stack([metric(logits[v * B:(v + 1) * B]) for v in range(V)])
        names = list(cap.grad_of)
        grads = torch.autograd.grad(values.mean(dim=1).sum(), [cap.grad_of[n] for n in names] + [final])
    g_of = dict(zip(names, grads[:-1]))
    with torch.no_grad():
        outputs = [head_results(model, g, cap.outputs[g.hook]) if g.per_head else _as_group(cap.outputs[g.hook], g)
                   for g in groups]
    diffs = fixed(outputs) if callable(fixed) else fixed  # [B pos D S]
    S, R = len(graph.senders), len(graph.receivers)
    dense = diffs.new_zeros(S, R)
    attn = [model.blocks[L].attn for L in range(n_layers)]
    for L in range(n_layers):
        c0, c1, c = graph.receiver_block(L)
        a = attn[L]
        gq = torch.einsum("bphe,hde->bphd", g_of[f"{L}.q"], a.W_Q.detach())
        gk = torch.einsum("bphe,hde->bphd", g_of[f"{L}.k"], a.W_K.detach())
        gv = torch.einsum("bphe,hde->bphd", g_of[f"{L}.v"], a.W_V.detach())
        cot = torch.cat([gq, gk, gv], dim=2)  # [VB p (h+2kv) d]: gradient at each head's normalised input
        x = cap.resid[L].detach().unsqueeze(2).expand(-1, -1, h + 2 * kv, -1).requires_grad_(True)
        with torch.enable_grad():
            (g_in,) = torch.autograd.grad(model.blocks[L].ln1.normalize(x), [x], cot)
        cols = [g_in]
        if graph.has_mlp:
            cols.append(g_of[f"{L}.mlp"].unsqueeze(2))
        g_layer = torch.cat(cols, dim=2)  # [VB p r d]
        g_layer = g_layer.view(V, B, *g_layer.shape[1:]).sum(0)  # fixed differences: sum the variants first
        n = 1 + (L + 1) * graph.senders_per_layer  # every sender up to this block (invalid cells are dropped)
        dense[:n, c0:c] = _contract(diffs, g_layer, n)
    g_final = grads[-1].view(V, B, *grads[-1].shape[1:]).sum(0).unsqueeze(2)  # [B out_pos 1 d]
    d_final = diffs[:, [readout]] if readout is not None else diffs
    dense[:, R - 1:] = _contract(d_final, g_final)
    return dense, outputs, values.detach()


def _contract(diffs: Tensor, g: Tensor, n: int | None = None) -> Tensor:
    """sum over batch, pos, d_model of diffs [B p D S][..., :n] * g [B p r D] -> [n r] (one GEMM on a
    strided view of ``diffs``: slicing after the reshape copies nothing)."""
    b, p, d, s = diffs.shape
    r = g.shape[2]
    flat = diffs.reshape(b * p * d, s)[:, : s if n is None else n]
    return flat.t() @ g.transpose(2, 3).reshape(b * p * d, r)


__all__ = ["edge_gradient"]
