"""Attribution graph of one prompt through the local replacement model (Ameisen et al. 2025, on a CPU).

**Local replacement model.** From the real forward pass we freeze every attention pattern
(``attn.hook_pattern``) and every norm scale (``*.hook_scale``), and replace each MLP output
(``blocks.l.hook_mlp_out``) by a leaf: the decoder outputs of the active transcoder features, the decoder
bias, and an *error node* per (layer, position), ``error = mlp_out - prediction``, which makes the leaf equal
the real MLP output (layers without a transcoder are all error). A transcoder's linear skip stays a live
linear path. What remains between leaves is linear (frozen attention mixes positions, frozen norms scale),
so every quantity downstream is a sum of one term per upstream node (the MLP modules do not even run in
the frozen model): a feature's term is its activation
times the gradient along its decoder vectors, an error's or a token embedding's the gradient dotted with it.

**Nodes**, in adjacency order: active features (``m{L}.f{i}@{pos}``), error nodes (``m{L}.err@{pos}``, layer
major), input tokens (``input@{pos}``) and output logits (``logits.{token id}``: the top logits covering
``logit_prob`` of the probability, at most ``max_logits``). **Edges** ``A[target, source]`` are direct effects:
the source's term in the target's value, where a feature's value is its pre-activation without its encoder
bias, and a logit's value the logit minus the mean logit (the raw logit for a one-output model), both at the
prompt's own activations. Rows are
computed in batches: one forward of ``batch`` copies of the frozen model and one backward with row ``r``
seeded at target ``r``; each batch's rows are written into the adjacency (a tensor in RAM, or rows streamed
into an ``.npy`` memory map with ``adjacency_file``). The edges into a target plus the target's *constant*
(its value with every node zeroed: biases reaching it along frozen paths) sum to its value exactly.

**Memory.** :func:`estimate_memory` predicts the adjacency and per-batch activation bytes before anything
runs; the batch size is chosen to fit ``memory_budget_mb``, and a prompt whose adjacency (or one batch row)
cannot fit raises ``MemoryBudgetError`` saying what to change.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mechscope.attribution.codes import LayerCode, layer_codes
from mechscope.dictionaries.clt import CrossLayerTranscoder
from mechscope.dictionaries.transcoder import Transcoder
from mechscope.errors import ConfigError, MechscopeError, ShapeError


class MemoryBudgetError(MechscopeError, MemoryError):
    """An attribution graph would not fit the memory budget."""


@dataclass
class AttributionGraph:
    """Nodes, adjacency and bookkeeping of one prompt's attribution graph (see the module docstring)."""

    tokens: list[int]
    n_layers: int
    feature_layer: Tensor
    """[n_features] source layer of each active feature."""
    feature_pos: Tensor
    """[n_features] position."""
    feature_index: Tensor
    """[n_features] index in its layer's dictionary."""
    activations: Tensor
    """[n_features] activation at the prompt."""
    logit_tokens: Tensor
    """[n_logits] token ids of the logit nodes."""
    logit_probabilities: Tensor
    """[n_logits] their probabilities."""
    adjacency: Tensor
    """[n_nodes n_nodes] direct effect of column (source) on row (target); zero rows for errors and tokens."""
    target_values: Tensor
    """[n_nodes] value each row decomposes (NaN for rows that are not targets)."""
    constants: Tensor
    """[n_nodes] each target's value with every node zeroed (bias paths)."""
    wall_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return int(self.feature_layer.shape[0])

    @property
    def error_slice(self) -> slice:
        return slice(self.n_features, self.n_features + self.n_layers * self.n_pos)

    @property
    def token_slice(self) -> slice:
        start = self.error_slice.stop
        return slice(start, start + self.n_pos)

    @property
    def logit_slice(self) -> slice:
        start = self.token_slice.stop
        return slice(start, start + int(self.logit_tokens.shape[0]))

    @property
    def n_nodes(self) -> int:
        return self.logit_slice.stop

    def node_names(self) -> list[str]:
        """``m{L}.f{i}@{pos}``, ``m{L}.err@{pos}``, ``input@{pos}``, ``logits.{id}`` in adjacency order."""
        feats = [f"m{int(ly)}.f{int(i)}@{int(p)}" for ly, i, p in
                 zip(self.feature_layer, self.feature_index, self.feature_pos)]
        errs = [f"m{ly}.err@{p}" for ly in range(self.n_layers) for p in range(self.n_pos)]
        toks = [f"input@{p}" for p in range(self.n_pos)]
        return feats + errs + toks + [f"logits.{int(t)}" for t in self.logit_tokens]

    def node_layer_pos(self) -> tuple[Tensor, Tensor]:
        """``(layer, pos)`` of every node for drawing: tokens at layer -1, logits at ``n_layers``."""
        L, P = self.n_layers, self.n_pos
        err_l = torch.arange(L).repeat_interleave(P)
        err_p = torch.arange(P).repeat(L)
        nl = int(self.logit_tokens.shape[0])
        layer = torch.cat([self.feature_layer, err_l, torch.full((P,), -1), torch.full((nl,), L)])
        pos = torch.cat([self.feature_pos, err_p, torch.arange(P), torch.full((nl,), P - 1)])
        return layer, pos

    def reconstruction_error(self) -> float:
        """max over targets of |sum of incoming edges + constant - value| / max(|value|, 1)."""
        rows = ~torch.isnan(self.target_values)
        lhs = self.adjacency[rows].double().sum(1) + self.constants[rows].double()
        rhs = self.target_values[rows].double()
        return float(((lhs - rhs).abs() / rhs.abs().clamp_min(1.0)).max()) if bool(rows.any()) else 0.0


# -- memory ---------------------------------------------------------------------------------------------------
def estimate_memory(model: Any, n_pos: int, n_nodes: int, batch: int, *, stream: bool = False) -> dict[str, float]:
    """Bytes (as MB) of the adjacency (0 when streamed to a file) and of one batch of the frozen forward+backward."""
    c = model.cfg
    d, L, h = c.d_model, c.n_layers, c.attention.n_heads
    d_mlp = c.mlp.d_mlp if c.mlp is not None else 0
    itemsize = torch.finfo(next(model.parameters()).dtype).bits // 8
    adjacency = 0.0 if stream else n_nodes * n_nodes * 4.0
    # leaves + their grads, and per layer what autograd keeps (normed input, v, z, residual: ~4 d per token) plus
    # the attention weights' working copy; MLPs do not run in the frozen model (their outputs are leaves).
    # Calibrated on SmolLM2 (benchmarks/attribution.py --part graph): 64 tokens x 64 rows measured +0.76 GB of
    # peak RSS where this predicts 2.0 GB, i.e. it errs on the safe side by ~2.6x.
    per_row = itemsize * n_pos * ((2 * (L + 1) * d) + L * (4 * d + h * n_pos)) + (4 * n_pos * d_mlp if batch else 0)
    return {"adjacency_mb": adjacency / 2**20, "per_row_mb": per_row / 2**20,
            "batch_mb": per_row * batch / 2**20, "total_mb": (adjacency + per_row * batch) / 2**20}


def _choose_batch(model: Any, n_pos: int, n_nodes: int, n_targets: int, budget_mb: float, stream: bool,
                  batch_size: int | None) -> int:
    est = estimate_memory(model, n_pos, n_nodes, 1, stream=stream)
    room = budget_mb - est["adjacency_mb"]
    if room < est["per_row_mb"]:
        raise MemoryBudgetError(
            f"a graph of this {n_pos}-token prompt needs {est['adjacency_mb']:.0f} MB for the adjacency "
            f"({n_nodes} nodes) + {est['per_row_mb']:.1f} MB per batch row, over the memory budget of "
            f"{budget_mb:.0f} MB; use a shorter prompt, raise memory_budget_mb, or stream the adjacency "
            f"to disk with adjacency_file=")
    fit = max(1, int(room // est["per_row_mb"]))
    return max(1, min(fit, n_targets, batch_size or 64))


# -- the frozen forward ---------------------------------------------------------------------------------------
@dataclass
class _Frozen:
    """What the real forward pass fixes: patterns, norm scales, MLP outputs and transcoder inputs."""

    tokens: Tensor  # [pos]
    patterns: dict[str, Tensor]
    scales: dict[str, Tensor]
    mlp_out: Tensor  # [L pos d]
    reads: dict[int, Tensor]  # layer -> transcoder input [pos d_in]
    logits: Tensor  # [d_vocab] at the last position
    embed: Tensor  # [pos d]


def _real_forward(model: Any, tokens: Tensor, codes: list[LayerCode]) -> _Frozen:
    L = model.cfg.n_layers
    names = model.hook_names()
    pat = [n for n in names if n.endswith("attn.hook_pattern")]
    scl = [n for n in names if n.endswith(".hook_scale")]
    mlp = [f"blocks.{i}.hook_mlp_out" for i in range(L)]
    reads = [lc.read_hook for lc in codes]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens[None], names=sorted({*pat, *scl, *mlp, *reads, "hook_embed"}))
    return _Frozen(tokens, {n: cache[n] for n in pat}, {n: cache[n] for n in scl},
                   torch.stack([cache[n][0] for n in mlp]), {lc.layer: cache[lc.read_hook][0] for lc in codes},
                   logits[0, -1], cache["hook_embed"][0])


class _ZeroMLP(torch.nn.Module):
    """Stands in for an MLP whose output a hook replaces anyway (saves its matmuls: ~3/4 of a block's)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


@contextlib.contextmanager
def _mlps_skipped(model: Any) -> Iterator[None]:
    """Swap every block's MLP for ``_ZeroMLP`` for a ``with`` block (its ``hook_mlp_out`` leaf replaces it)."""
    saved = [blk.mlp for blk in model.blocks]
    try:
        for blk in model.blocks:
            if blk.mlp is not None:
                blk.mlp = _ZeroMLP()
        yield
    finally:
        for blk, mlp in zip(model.blocks, saved):
            blk.mlp = mlp


def _frozen_run(model: Any, fz: _Frozen, codes: list[LayerCode], E: Tensor, M: Tensor,
                want_reads: bool) -> tuple[Tensor, dict[int, Tensor]]:
    """The local replacement model on leaves ``E [B pos d]``, ``M [L B pos d]``: (final normed last-position
    residual ``[B d]``, transcoder inputs per layer ``[B pos d_in]``)."""
    B = E.shape[0]
    captured: dict[int, Tensor] = {}
    skips = {lc.layer: lc for lc in codes if lc.W_skip is not None}

    def const(t: Tensor):  # noqa: ANN202
        return lambda x, hook: t.expand_as(x)

    def read(layer: int):  # noqa: ANN202
        def fn(x: Tensor, hook: Any) -> None:
            captured[layer] = x
        return fn

    def mlp_out(layer: int):  # noqa: ANN202
        def fn(x: Tensor, hook: Any) -> Tensor:
            lc = skips.get(layer)
            if lc is None:
                return M[layer]
            return M[layer] + captured[layer] @ lc.W_skip  # type: ignore[operator]
        return fn

    fwd: list[tuple[str, Any]] = [("hook_embed", lambda x, hook: E)]
    fwd += [(n, const(p)) for n, p in fz.patterns.items()]
    fwd += [(n, const(s)) for n, s in fz.scales.items() if not n.startswith("ln_final")]
    needs_reads = want_reads or bool(skips)
    if needs_reads:
        fwd += [(lc.read_hook, read(lc.layer)) for lc in codes]
    fwd += [(f"blocks.{i}.hook_mlp_out", mlp_out(i)) for i in range(model.cfg.n_layers)]
    fin = fz.scales.get("ln_final.hook_scale")
    if fin is not None:
        fwd.append(("ln_final.hook_scale", const(fin[:, -1:])))
    with model.hooks(fwd=fwd), _mlps_skipped(model):
        resid = model(fz.tokens[None].expand(B, -1), stop_at_layer=model.cfg.n_layers)
        final = model.ln_final(resid[:, -1:])[:, 0]
    return final, captured


# -- building -------------------------------------------------------------------------------------------------------
def _top_logits(logits: Tensor, prob: float, k_max: int) -> tuple[Tensor, Tensor]:
    p = torch.softmax(logits.double(), -1)
    top = p.topk(min(k_max, p.shape[0]))
    n = int((top.values.cumsum(0) < prob).sum()) + 1
    n = min(n, top.values.shape[0])
    return top.indices[:n], top.values[:n].float()


def build_graph(model: Any, tokens: Tensor, transcoders: CrossLayerTranscoder | Sequence[Transcoder], *,
                max_logits: int = 10, logit_prob: float = 0.95, batch_size: int | None = None,
                memory_budget_mb: float = 4096.0, adjacency_file: str | Path | None = None,
                max_features: int | None = None) -> AttributionGraph:
    """The attribution graph of one prompt (see the module docstring).

    Args:
        tokens: ``[pos]`` or ``[1 pos]`` token ids.
        transcoders: a ``CrossLayerTranscoder`` or per-layer ``Transcoder``s replacing ``blocks.L.hook_mlp_out``.
        max_features: keep only this many features (largest activation x decoder norm); the rest join the
            error nodes of their (layer, position), so the graph stays exact.
        adjacency_file: stream adjacency rows into this ``.npy`` memory map instead of RAM.
    """
    t0 = time.perf_counter()
    if tokens.dim() == 2 and tokens.shape[0] == 1:
        tokens = tokens[0]
    if tokens.dim() != 1 or tokens.numel() == 0:
        raise ShapeError(f"an attribution graph takes one prompt: tokens [pos] or [1 pos], got {tuple(tokens.shape)}")
    if model.cfg.mlp is None:
        raise ConfigError("an attribution graph replaces MLPs by transcoders; this model has no MLPs")
    if not 0 < logit_prob <= 1 or max_logits < 1:
        raise ConfigError(f"logit_prob must be in (0, 1] and max_logits >= 1, got {logit_prob}, {max_logits}")
    codes = layer_codes(model, transcoders)
    L, P, d = model.cfg.n_layers, int(tokens.shape[0]), model.cfg.d_model
    # a cheap check first: even with no features the adjacency of errors+tokens+logits must fit
    _choose_batch(model, P, L * P + P + max_logits, 1, memory_budget_mb, adjacency_file is not None, batch_size)
    fz = _real_forward(model, tokens.long(), codes)
    dtype = fz.mlp_out.dtype

    # active features and their decoder rows per target layer
    f_layer, f_pos, f_idx, f_act = [], [], [], []
    for lc in codes:
        with torch.no_grad():
            pre = (lc.in_scale * fz.reads[lc.layer]) @ lc.W_enc + lc.b_enc
            act = lc.activate(pre)
        pos, idx = act.nonzero(as_tuple=True)
        f_layer.append(torch.full_like(pos, lc.layer))
        f_pos.append(pos)
        f_idx.append(idx)
        f_act.append(act[pos, idx])
    layer_t = torch.cat(f_layer) if f_layer else torch.zeros(0, dtype=torch.long)
    pos_t = torch.cat(f_pos) if f_pos else torch.zeros(0, dtype=torch.long)
    idx_t = torch.cat(f_idx) if f_idx else torch.zeros(0, dtype=torch.long)
    act_t = torch.cat(f_act).to(dtype) if f_act else torch.zeros(0, dtype=dtype)
    by_layer = {lc.layer: lc for lc in codes}
    # decoder rows per target layer: (feature ids, vectors [n d])
    dec_rows: dict[int, tuple[Tensor, Tensor]] = {}
    for t in range(L):
        id_list, vec_list = [], []
        for lc in codes:
            if t in lc.decoders:
                sel = (layer_t == lc.layer).nonzero()[:, 0]
                id_list.append(sel)
                vec_list.append(lc.decoders[t][idx_t[sel]].detach().to(dtype))
        if id_list:
            dec_rows[t] = (torch.cat(id_list), torch.cat(vec_list))
    if max_features is not None and act_t.numel() > max_features:
        score = act_t.abs().clone()
        for _t, (ids, vecs) in dec_rows.items():
            score.index_add_(0, ids, act_t[ids].abs() * vecs.norm(dim=-1))
        keep = score.topk(max_features).indices.sort().values
        remap = torch.full((act_t.numel(),), -1, dtype=torch.long)
        remap[keep] = torch.arange(keep.numel())
        new_rows = {}
        for t, (ids, vecs) in dec_rows.items():
            m = remap[ids] >= 0
            new_rows[t] = (remap[ids[m]], vecs[m])
        dec_rows = new_rows
        layer_t, pos_t, idx_t, act_t = layer_t[keep], pos_t[keep], idx_t[keep], act_t[keep]
    n_f = int(act_t.numel())

    # error nodes: mlp_out - (features' decoder outputs + b_dec + skip)
    recon = torch.zeros(L, P, d, dtype=dtype)
    for t, (ids, vecs) in dec_rows.items():
        recon[t].index_add_(0, pos_t[ids], act_t[ids, None] * vecs)
    bias_leaf = torch.zeros(L, 1, P, d, dtype=dtype)
    skip_real = torch.zeros(L, P, d, dtype=dtype)
    with torch.no_grad():
        for lc in codes:
            if lc.b_dec is not None:
                bias_leaf[lc.layer] = lc.b_dec.to(dtype)
            if lc.W_skip is not None:
                skip_real[lc.layer] = fz.reads[lc.layer] @ lc.W_skip
    errors = fz.mlp_out - recon - bias_leaf[:, 0] - skip_real  # [L P d]
    leaf_M = (recon + errors + bias_leaf[:, 0]).detach()  # = mlp_out - skip

    logit_tok, logit_p = _top_logits(fz.logits, logit_prob, max_logits)
    n_logit = int(logit_tok.numel())
    n_nodes = n_f + L * P + P + n_logit
    n_targets = n_f + n_logit
    stream = adjacency_file is not None
    B = _choose_batch(model, P, n_nodes, max(n_targets, 1), memory_budget_mb, stream, batch_size)
    if stream:
        mm = np.lib.format.open_memmap(str(adjacency_file), mode="w+", dtype=np.float32, shape=(n_nodes, n_nodes))
        adjacency = torch.from_numpy(mm)
    else:
        adjacency = torch.zeros(n_nodes, n_nodes, dtype=torch.float32)

    W_U = model.W_U.detach().to(dtype)
    # a logit's value is the logit minus the mean logit; with a single output (a numerical readout) the
    # mean would cancel it, so the raw logit is used
    centre = W_U.mean(1, keepdim=True) if W_U.shape[1] > 1 else torch.zeros_like(W_U[:, :1])
    logit_dirs = (W_U[:, logit_tok] - centre).T  # [n_logit d]
    enc_cols = {lc.layer: lc.W_enc.detach().to(dtype) for lc in codes}
    in_scale = {lc.layer: lc.in_scale for lc in codes}

    def values(final: Tensor, reads: dict[int, Tensor], rows: Tensor) -> Tensor:
        """Target value of each row ``rows[r]`` computed in batch row ``r``."""
        out = final.new_zeros(rows.shape[0])
        is_feat = rows < n_f
        fr = rows[is_feat]
        br = is_feat.nonzero()[:, 0]
        for layer in layer_t[fr].unique().tolist():
            m = layer_t[fr] == layer
            r, f = br[m], fr[m]
            x = reads[layer][r, pos_t[f]]  # [n d_in]
            out = out.index_add(0, r, in_scale[layer] * (x * enc_cols[layer][:, idx_t[f]].T).sum(-1))
        lr = (~is_feat).nonzero()[:, 0]
        if lr.numel():
            out = out.index_add(0, lr, (final[lr] * logit_dirs[rows[lr] - n_f]).sum(-1))
        return out

    target_values = torch.full((n_nodes,), float("nan"), dtype=torch.float64)
    constants = torch.zeros(n_nodes, dtype=torch.float64)
    target_ids = torch.cat([torch.arange(n_f), n_nodes - n_logit + torch.arange(n_logit)])
    local_rows = torch.cat([torch.arange(n_f), n_f + torch.arange(n_logit)])  # index into targets space
    embed = fz.embed.to(dtype)
    model_grads = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.no_grad():  # constants: every node zeroed, the decoder biases kept
            zE = torch.zeros(1, P, d, dtype=dtype)
            final0, reads0 = _frozen_run(model, fz, codes, zE, bias_leaf, want_reads=True)
        for start in range(0, n_targets, B):
            rows = local_rows[start:start + B]
            b = rows.shape[0]
            E = embed[None].expand(b, -1, -1).clone().requires_grad_(True)
            M = leaf_M[:, None].expand(-1, b, -1, -1).clone().requires_grad_(True)
            with torch.enable_grad():
                final, reads = _frozen_run(model, fz, codes, E, M, want_reads=n_f > 0)
                vals = values(final, reads, rows)
                gE, gM = torch.autograd.grad(vals.sum(), [E, M], allow_unused=True)
            gE = torch.zeros_like(E) if gE is None else gE
            gM = torch.zeros_like(M) if gM is None else gM
            with torch.no_grad():
                feat = torch.zeros(b, n_f, dtype=dtype)
                for t, (ids, vecs) in dec_rows.items():
                    g = gM[t][:, pos_t[ids]]  # [b n_t d]
                    feat.index_add_(1, ids, (g * vecs).sum(-1) * act_t[ids])
                err = torch.einsum("lbpd,lpd->blp", gM, errors).reshape(b, L * P)
                tok = torch.einsum("bpd,pd->bp", gE, embed)
                row = torch.cat([feat, err, tok, torch.zeros(b, n_logit, dtype=dtype)], 1)
                ids_global = target_ids[start:start + b]
                adjacency[ids_global] = row.float()
                target_values[ids_global] = vals.detach().double()
                c0 = values(final0.expand(b, -1), {k: v.expand(b, -1, -1) for k, v in reads0.items()}, rows)
                constants[ids_global] = c0.double()
    finally:
        for p, g in zip(model.parameters(), model_grads):
            p.requires_grad_(g)
    if stream:
        mm.flush()
    wall = time.perf_counter() - t0
    return AttributionGraph(
        tokens=[int(t) for t in tokens], n_layers=L, feature_layer=layer_t.clone(), feature_pos=pos_t.clone(),
        feature_index=idx_t.clone(), activations=act_t.detach().float(), logit_tokens=logit_tok,
        logit_probabilities=logit_p, adjacency=adjacency, target_values=target_values, constants=constants,
        wall_seconds=wall, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        extras={"batch_size": B, "layers_with_transcoders": sorted(by_layer),
                "memory_estimate": estimate_memory(model, P, n_nodes, B, stream=stream)})


def check_budget(model: Any, n_pos: int, memory_budget_mb: float) -> None:
    """Raise ``MemoryBudgetError`` early if even a featureless graph of ``n_pos`` tokens cannot fit."""
    n = model.cfg.n_layers * n_pos + n_pos + 10
    _choose_batch(model, n_pos, n, 1, memory_budget_mb, False, None)


from mechscope.attribution.prune import (  # noqa: E402  (re-exported: one import for graph users)
    PrunedGraph,
    compute_influence,
    graph_scores,
    logit_weights,
    normalize_matrix,
    prune,
    top_paths,
)

__all__ = ["AttributionGraph", "PrunedGraph", "MemoryBudgetError", "build_graph", "prune", "graph_scores",
           "estimate_memory", "compute_influence", "normalize_matrix", "top_paths", "check_budget", "logit_weights"]
