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
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechscope.circuits.graph import Graph
from mechscope.circuits.patchable import _row_stable, head_z_hook, sender_groups
from mechscope.models.components.norm import Identity, LayerNorm, RMSNorm


class _Capture:
    """Tensors gathered by the hooks of one forward."""

    def __init__(self) -> None:
        self.outputs: dict[str, Tensor] = {}
        self.resid: dict[int, Tensor] = {}
        self.grad_of: dict[str, Tensor] = {}


def edge_gradient(model: Any, graph: Graph, tokens: Int[Tensor, "batch pos"], metric: Callable[[Tensor], Tensor],
                  diffs: Callable[[list[Tensor]], Tensor] | Tensor, readout: int | None = -1,
                  fractions: tuple[float, ...] = (0.0,), delta: Tensor | None = None
                  ) -> tuple[Tensor, list[Tensor], Tensor]:
    """Sum over variants of ``d mean(metric) / d m`` at the masks the variants stand for, dense
    [n_senders n_receivers] (invalid cells hold junk or 0; ``graph.gather`` drops them), as the patchable
    forward's ``fixed=`` gradient would give it.

    Args:
        diffs: sender-major differences [n_senders batch pos d_model] (``sender_diffs``; their dtype is the
            contraction's), or a function building them from the raw sender tensors of this forward's first
            variant (``hook_z`` [batch pos n_heads d_head] for head groups, [batch pos d_model] otherwise),
            so EAP needs no separate clean forward when that variant is the clean one.
        fractions: per variant, the fraction ``f`` of ``delta`` added to the embeddings.
        delta: [batch pos d_model] embedding shift (required when a fraction is nonzero).

    Returns: (dense gradient, raw sender tensors of variant 0 per group, metric [V batch]).
    """
    V, B = len(fractions), tokens.shape[0]
    groups = sender_groups(graph)
    cap = _Capture()
    n_layers = graph.n_layers
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
    # head outputs: capture the small hook_z (projected once, as differences, by ``sender_diffs``), so the
    # forward keeps the fused W_O matmul instead of materialising hook_result [rows pos heads d_model]
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
    raw = [cap.outputs[g.hook] for g in groups]
    with torch.no_grad():
        d = diffs(raw) if callable(diffs) else diffs  # [S B pos D]
        gt = _receiver_grads(model, graph, cap.resid, g_of, V, d.dtype)  # [R-1 B pos D]
        S, R = len(graph.senders), len(graph.receivers)
        dense = torch.zeros(S, R, dtype=torch.float32 if d.dtype == torch.bfloat16 else d.dtype)
        _contract_blocked(graph, d, gt, dense)
        g_final = grads[-1].view(V, B, *grads[-1].shape[1:]).sum(0)  # [B out_pos D]
        d_final = d[:, :, [readout]] if readout is not None else d
        dense[:, R - 1] = (d_final.reshape(S, -1).to(dense.dtype) @ g_final.reshape(-1).to(dense.dtype))
    return dense, raw, values.detach()


def sender_diffs(model: Any, graph: Graph, patch: list[Tensor], raw: list[Tensor],
                 dtype: torch.dtype | None = None) -> Float[Tensor, "senders batch pos d_model"]:
    """``patch - clean output`` of every sender, sender-major, in ``dtype`` (default: the outputs' dtype).

    ``raw`` are the clean forward's sender tensors (``hook_z`` for head groups): each head group is
    projected through ``W_O`` once, straight into its rows (no [batch pos heads d_model] copy of the clean
    outputs is kept), in the outputs' own precision; only the finished difference is rounded to ``dtype``."""
    groups = sender_groups(graph)
    b, p = raw[0].shape[:2]
    out = torch.empty(len(graph.senders), b, p, raw[0].shape[-1], dtype=dtype or raw[0].dtype)
    for g, pt, x in zip(groups, patch, raw):
        rows = out[g.start:g.start + g.size]
        if g.per_head:
            attn = model.get_submodule(g.hook.rsplit(".", 1)[0])
            proj = torch.einsum("bphe,hed->hbpd", x, attn.W_O.detach())  # [n b p d]: the clean outputs
            rows.copy_(proj.neg_().add_(pt.permute(2, 0, 1, 3)))
        else:
            rows.copy_(pt.permute(2, 0, 1, 3) - x.unsqueeze(0))
    return out


@dataclass(frozen=True)
class NormLinearisation:
    """A norm's vector-Jacobian product in closed form: for RMSNorm and LayerNorm alike,
    ``J^T c = scale * (u - xhat * mean_d(u * xhat))`` with ``u = c * w`` (centred over ``d_model`` for
    LayerNorm), ``xhat`` the normalised input before the weight and ``scale`` the inverse RMS / std."""

    xhat: Tensor | None
    """[rows pos d_model], None for no norm (then ``J^T c = c``)."""
    scale: Tensor | None
    """[rows pos 1]."""
    w: Tensor | None
    """The norm's weight [d_model] (folded into the projection weights)."""
    center: bool
    """Whether the norm subtracts the mean (LayerNorm)."""


def _rms_linearisation(norm: Any, x: Tensor) -> NormLinearisation:
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
    return NormLinearisation(x * r, r, norm.w.detach(), False)


def _layer_linearisation(norm: Any, x: Tensor) -> NormLinearisation:
    xc = x - x.mean(-1, keepdim=True)
    inv = torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + norm.eps)
    return NormLinearisation(xc * inv, inv, norm.w.detach(), True)


NORM_LINEARISATIONS: dict[type, Callable[[Any, Tensor], NormLinearisation]] = {
    RMSNorm: _rms_linearisation,
    LayerNorm: _layer_linearisation,
    Identity: lambda norm, x: NormLinearisation(None, None, None, False),
}
"""Norm class -> closed-form VJP parts. Any other norm falls back to autograd through its ``normalize``
(one copy of the residual per receiver head, slower)."""


def _receiver_grads(model: Any, graph: Graph, resid: dict[int, Tensor], g_of: dict[str, Tensor], V: int,
                    dtype: torch.dtype) -> Tensor:
    """Every non-logit receiver's input gradient, receiver-major [R-1 batch pos d_model] in ``dtype``, summed
    over the variants (the differences are fixed, so the variants' gradients can be summed first)."""
    x0 = resid[0]
    vb, p, dm = x0.shape
    out = torch.empty(len(graph.receivers) - 1, vb // V, p, dm, dtype=dtype)
    for L in range(graph.n_layers):
        c0, c1, c = graph.receiver_block(L)
        a, norm = model.blocks[L].attn, model.blocks[L].ln1
        x = resid[L].detach()
        parts = [(g_of[f"{L}.{k}"], w.detach()) for k, w in (("q", a.W_Q), ("k", a.W_K), ("v", a.W_V))]
        lin = NORM_LINEARISATIONS.get(type(norm))
        u = _norm_vjp(lin(norm, x), parts) if lin is not None else _autograd_norm_vjp(norm, x, parts)
        out[c0:c1] = u.view(c1 - c0, V, vb // V, p, dm).sum(1)
        if graph.has_mlp:
            out[c1] = g_of[f"{L}.mlp"].view(V, vb // V, p, dm).sum(0)
    return out


def _norm_vjp(lin: NormLinearisation, parts: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Gradient at the norm's input [heads rows pos d_model] for each head's cotangent ``g @ W^T``: the norm's
    weight (and LayerNorm's centring) folded into ``W``, its scale into ``g``, then one rank-one correction."""
    gs, ws = [], []
    for g, w in parts:  # g [rows pos heads d_head], w [heads d_model d_head]
        if lin.w is not None:
            w = w * lin.w[None, :, None]
        if lin.center:
            w = w - w.mean(1, keepdim=True)
        gs.append(g * lin.scale.unsqueeze(-1) if lin.scale is not None else g)
        ws.append(w)
    u = torch.cat([torch.einsum("bphe,hde->hbpd", g, w) for g, w in zip(gs, ws)])  # [heads rows pos d]
    if lin.xhat is not None:
        dot = torch.einsum("hbpd,bpd->hbp", u, lin.xhat)
        u.addcmul_(dot.unsqueeze(-1), lin.xhat.unsqueeze(0), value=-1.0 / u.shape[-1])
    return u


def _autograd_norm_vjp(norm: Any, x: Tensor, parts: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Fallback for a norm without a closed form: autograd through ``normalize`` on one copy per head."""
    cot = torch.cat([torch.einsum("bphe,hde->bphd", g, w) for g, w in parts], dim=2)  # [rows pos heads d]
    xe = x.unsqueeze(2).expand(-1, -1, cot.shape[2], -1).requires_grad_(True)
    with torch.enable_grad():
        (g_in,) = torch.autograd.grad(norm.normalize(xe), [xe], cot)
    return g_in.permute(2, 0, 1, 3)


LAYERS_PER_BLOCK = 5
"""Sender layers per GEMM of the contraction: one block of senders meets every receiver from its first
layer on (so about half of the sender x receiver pairs, the ones edges can join, are computed), in GEMMs
wide enough to run near the core's peak (per receiver layer, 16 columns at a time, was memory-bound)."""


def _contract_blocked(graph: Graph, diffs: Tensor, gt: Tensor, dense: Tensor) -> None:
    """dense[s, r] = sum over batch, pos, d_model of diffs[s] * gt[r] for every sender s and non-logit
    receiver r that an edge can join (and a few cells in each block's diagonal that no edge uses)."""
    S = diffs.shape[0]
    d = diffs.reshape(S, -1)
    g = gt.reshape(gt.shape[0], -1)
    n_layers, per = graph.n_layers, graph.senders_per_layer
    for a in range(0, n_layers, LAYERS_PER_BLOCK):
        s0 = 0 if a == 0 else 1 + a * per
        s1 = 1 + min(a + LAYERS_PER_BLOCK, n_layers) * per
        c0 = graph.receiver_block(a)[0]
        dense[s0:s1, c0:g.shape[0]] = (d[s0:s1] @ g[c0:].t()).to(dense.dtype)


__all__ = ["LAYERS_PER_BLOCK", "NORM_LINEARISATIONS", "NormLinearisation", "edge_gradient", "sender_diffs"]
