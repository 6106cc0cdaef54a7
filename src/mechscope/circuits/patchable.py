"""The patchable forward: any set of edges patched in one forward, with a float mask per edge.

Each receiver reads ``resid + sum_s m[s, r] * (patch_s - act_s)``: its ordinary input (the residual before
its norm) with, for every sender ``s`` in front of it, the fraction ``m[s, r]`` of the difference between
the sender's patch value (its output in the corrupted run, or a mean / zero) and its output in *this*
forward subtracted in. ``m = 0`` everywhere is the clean forward, ``m = 1`` on every edge the corrupted one
(each receiver then reads only corrupted sender outputs), and a one-hot ``m`` patches one edge. Because ``m``
is a float tensor, ``d metric / d m`` at ``m = 0`` scores every edge in one backward (attribution patching
on edges, auto-circuit's idea).

Everything is a hook: senders are ``blocks.0.hook_resid_pre`` (``input``), ``attn.hook_result``, and
``hook_mlp_out``; receivers are ``hook_q_input`` / ``hook_k_input`` / ``hook_v_input`` (per head, or per
key-value head), ``hook_mlp_in`` and the final residual. Variants (different masks) run in the batch
dimension: masks ``[V n_senders n_receivers]`` and ``V`` copies of the batch, rows variant-major. One
GEMM per (sender group, receiver layer) pair adds the differences (``masked_sum``: the receivers' masks are
the rows, so a variant's bits do not depend on what else shares the call); it keeps each sender's
difference tensor once (no growing concatenation held for backward), and groups whose mask block is all
zero are skipped when no gradient is wanted. Layers before the first receiver whose masks differ between variants
run once for all of them (ACDC's and exact patching's variants differ only near one receiver).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechscope.circuits.graph import Graph
from mechscope.errors import ConfigError, ShapeError

Ablation = Literal["corrupted", "mean", "zero", "resample"]
MetricFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class SenderGroup:
    """Senders written by one hook: ``input``, the heads of a layer, or an MLP."""

    hook: str
    """Hook point whose output the senders are."""
    start: int
    """First sender row in the graph."""
    size: int
    """Number of senders (1 or n_heads)."""
    per_head: bool
    """Whether the hook's tensor has a head axis ([b p n d]) or not ([b p d])."""


def sender_groups(graph: Graph) -> list[SenderGroup]:
    """The groups in sender order."""
    groups = [SenderGroup("blocks.0.hook_resid_pre", 0, 1, False)]
    for L in range(graph.n_layers):
        start = 1 + L * graph.senders_per_layer
        groups.append(SenderGroup(f"blocks.{L}.attn.hook_result", start, graph.n_heads, True))
        if graph.has_mlp:
            groups.append(SenderGroup(f"blocks.{L}.hook_mlp_out", start + graph.n_heads, 1, False))
    return groups


def _as_group(x: Tensor, group: SenderGroup) -> Tensor:
    """[b p n d] view of a sender hook's tensor."""
    return x if group.per_head else x.unsqueeze(2)


def sender_outputs(model: Any, graph: Graph, tokens: Int[Tensor, "batch pos"], readout: int | None = -1
                   ) -> tuple[list[Tensor], Tensor]:
    """Every sender group's output [batch pos n d_model] in a plain forward of ``tokens`` (no gradient), and
    the logits at the readout [batch out_pos d_vocab] (the unembedding runs there only)."""
    check_sum_of_senders(model)
    groups = sender_groups(graph)
    # head outputs are projected from the small hook_z afterwards: the forward keeps its fused W_O matmul
    names = [head_z_hook(g) if g.per_head else g.hook for g in groups]
    with torch.no_grad():
        resid, cache = model.run_with_cache(tokens, names=names, stop_at_layer=graph.n_layers)
        if readout is not None:
            resid = resid[:, [readout]]
        logits = _row_stable(lambda x: model.unembed(model.ln_final(x)), resid)
        outputs = [head_results(model, g, cache[n]) if g.per_head else _as_group(cache[n], g)
                   for g, n in zip(groups, names)]
    return outputs, logits


def check_sum_of_senders(model: Any) -> None:
    """Refuse models whose residual is not the sum of the senders' outputs: with ``norm.post_sublayer`` (Gemma 2/3)
    a layer adds ``ln1_post(Σ_h result_h + b_O)``, and the norm's scale moves with every patched head."""
    if model.cfg.norm.post_sublayer:
        raise ConfigError(
            "circuit discovery patches each head's output (attn.hook_result) into the residual as if a layer's "
            "attention output were the sum of its heads; this model normalises that sum once more (norm.post_sublayer, "
            "Gemma 2/3's ln1_post), so patched edges would not add up to the model's forward. Not supported yet: "
            "use cache.stack_head_results / analysis.key_path_effects (exact with a frozen ln1_post) or a model "
            "without post-sublayer norms")


def head_z_hook(group: SenderGroup) -> str:
    """The ``hook_z`` of a head group's attention ([batch pos n_heads d_head], before ``W_O``)."""
    return group.hook.replace("hook_result", "hook_z")


def head_results(model: Any, group: SenderGroup, z: Tensor) -> Tensor:
    """Per-head outputs [batch pos n_heads d_model] (``hook_result``'s values) from ``hook_z``."""
    attn = model.get_submodule(group.hook.rsplit(".", 1)[0])
    return torch.einsum("bphe,hed->bphd", z, attn.W_O.detach())


def ablate(outputs: list[Tensor], ablation: Ablation = "corrupted", seed: int = 0) -> list[Tensor]:
    """What a patched edge carries, per sender group [batch|1 pos n d_model], from the senders' outputs on
    the corrupted prompts: ``corrupted``: the same row's; ``resample``: a random other row's (seeded, ACDC's
    resample ablation); ``mean``: the batch mean (per position); ``zero``: zero."""
    if ablation not in ("corrupted", "mean", "zero", "resample"):
        raise ConfigError(f"ablation must be 'corrupted', 'mean', 'zero' or 'resample', got {ablation!r}")
    if ablation == "mean":
        return [o.mean(0, keepdim=True) for o in outputs]
    if ablation == "zero":
        return [torch.zeros_like(o[:1]) for o in outputs]
    if ablation == "resample":
        perm = torch.randperm(outputs[0].shape[0], generator=torch.Generator().manual_seed(seed))
        return [o[perm] for o in outputs]
    return outputs


def patch_values(model: Any, graph: Graph, corrupted: Int[Tensor, "batch pos"], ablation: Ablation = "corrupted",
                 seed: int = 0) -> list[Tensor]:
    """``ablate`` applied to the senders' outputs on ``corrupted``."""
    return ablate(sender_outputs(model, graph, corrupted)[0], ablation, seed)


def fixed_differences(patch: list[Tensor], outputs: list[Tensor]) -> Tensor:
    """``patch - outputs`` of every sender as one tensor [batch pos d_model n_senders] (``fixed=``)."""
    return torch.cat([(p - o).transpose(-1, -2) for p, o in zip(patch, outputs)], dim=-1).contiguous()


def check_masks(graph: Graph, masks: Tensor) -> Tensor:
    """Masks as [V n_senders n_receivers] (a 2-D mask is one variant)."""
    want = (len(graph.senders), len(graph.receivers))
    m = masks.unsqueeze(0) if masks.dim() == 2 else masks
    if m.dim() != 3 or tuple(m.shape[1:]) != want:
        raise ShapeError(f"edge masks: expected [variants {want[0]} {want[1]}] (senders x receivers), "
                         f"got {tuple(masks.shape)}")
    return m


def patched_logits(model: Any, graph: Graph, tokens: Int[Tensor, "batch pos"], patch: list[Tensor],
                   masks: Tensor, *, readout: int | None = -1, fixed: Tensor | None = None
                   ) -> Float[Tensor, "rows out_pos d_vocab"]:
    """Logits [V*batch out_pos d_vocab] of the forward with edges patched by ``masks`` (module docstring).

    Args:
        patch: ``patch_values`` (per sender group [batch|1 pos n d_model]).
        masks: float [V n_senders n_receivers] (or [n_senders n_receivers]); may require grad.
        readout: the position the metric reads (logits are computed there only; out_pos = 1), or None for
            every position.
        fixed: constant differences [batch pos d_model n_senders] (``fixed_differences``) to use instead of
            ``patch - act`` (the gradient methods use ``patch - clean`` so that interpolating one row does
            not move the others). Then each receiver layer costs one matmul over all senders before it.
    """
    m = check_masks(graph, masks).to(dtype=patch[0].dtype)
    V, B = m.shape[0], tokens.shape[0]
    groups = sender_groups(graph)
    split = _shared_prefix(graph, m)
    state = _PatchState(graph, groups, m[:1] if split else m, B, patch, fixed, live_from=m)
    fwd: list[tuple[str, Any]] = [(g.hook, state.sender_hook(i)) for i, g in enumerate(groups)]
    for L in range(graph.n_layers):
        fwd += [(f"blocks.{L}.hook_{k}_input", state.attn_hook(L, k)) for k in ("q", "k", "v")]
        if graph.has_mlp:
            fwd.append((f"blocks.{L}.hook_mlp_in", state.mlp_hook(L)))
    with model.hooks(fwd=fwd):
        if split:  # layers before `split` are the same in every variant: run them once, then widen
            resid = model(tokens, stop_at_layer=split)
            state.widen(m)
            resid = model.run_blocks(resid.repeat(V, 1, 1), split, graph.n_layers)
        else:
            resid = model(tokens.repeat(V, 1), stop_at_layer=graph.n_layers)
    if readout is not None:
        resid = resid[:, [readout]]
    col = len(graph.receivers) - 1
    add = state.contribution(len(groups), col, col + 1, readout)
    if add is not None:
        resid = resid + add.reshape(resid.shape)
    return _row_stable(lambda x: model.unembed(model.ln_final(x)), resid)


def _row_stable(fn: Callable[[Tensor], Tensor], x: Tensor, min_rows: int = 4) -> Tensor:
    """``fn`` on [n 1 d] rows padded to at least ``min_rows``: CPU GEMMs with fewer than 4 rows take a GEMV
    path with another summation order, so without the padding a variant's logits would depend on how many
    variants share its forward (ACDC's batched = sequential bit-for-bit guarantee needs them not to)."""
    n = x.shape[0] * x.shape[1]
    if n >= min_rows:
        return fn(x)
    pad = x.new_zeros(min_rows - n, *x.shape[1:]) if x.shape[1] == 1 else None
    if pad is None:
        return fn(x)
    return fn(torch.cat([x, pad]))[: x.shape[0]]


class _PatchState:
    """Sender differences gathered during one patched forward, and the receiver hooks that use them."""

    def __init__(self, graph: Graph, groups: list[SenderGroup], masks: Tensor, batch: int, patch: list[Tensor],
                 fixed: Tensor | None, live_from: Tensor) -> None:
        self.graph, self.groups, self.masks, self.B = graph, groups, masks, batch
        self.V = masks.shape[0]
        self.patch, self.fixed = patch, fixed
        self.diffs: list[Tensor] = []
        self.pending: dict[str, Tensor] = {}
        self.skip_zero = not masks.requires_grad
        # which sender rows have any nonzero mask at all, per group (to skip work when nothing is patched)
        self.live = [bool(live_from[:, g.start:g.start + g.size].any()) or not self.skip_zero for g in groups]

    def widen(self, masks: Tensor) -> None:
        """From here on run every variant (the differences so far are shared: [1 B p D n])."""
        self.masks, self.V = masks, masks.shape[0]

    def sender_hook(self, i: int) -> Callable[[Tensor, Any], None]:
        g = self.groups[i]

        def hook(x: Tensor, hook: Any) -> None:
            if len(self.diffs) != i:
                raise RuntimeError(f"sender hooks fired out of order at {g.hook}")
            if not self.live[i] or self.fixed is not None:
                self.diffs.append(x.new_zeros(0))
                return
            act = _as_group(x, g)
            d = self.patch[i].unsqueeze(0) - act.reshape(self.V, self.B, *act.shape[1:])
            # [V|1 n B p d_model]: each sender's difference one row of the masks' matmul (kept for backward)
            self.diffs.append(d.permute(0, 3, 1, 2, 4).contiguous())

        return hook

    def contribution(self, n_groups: int, c0: int, c1: int, readout: int | None) -> Tensor | None:
        """Sum over the first ``n_groups`` groups of mask-weighted differences into receiver columns
        ``c0:c1``: [V B pos (c1-c0) d_model], or None when every mask involved is zero."""
        if self.fixed is not None:
            n = sum(g.size for g in self.groups[:n_groups])
            d = self.fixed[:, [readout]] if readout is not None else self.fixed
            return _weighted(d[None, ..., :n], self.masks[:, :n, c0:c1]).permute(0, 1, 2, 4, 3)
        total: Tensor | None = None
        for g, d in zip(self.groups[:n_groups], self.diffs[:n_groups]):
            block = self.masks[:, g.start:g.start + g.size, c0:c1]
            if d.numel() == 0 or (self.skip_zero and not bool(block.any())):
                continue
            if readout is not None:
                d = d[:, :, :, [readout]]
            term = masked_sum(d, block)
            total = term if total is None else total + term
        return None if total is None else total.permute(0, 2, 3, 1, 4)

    def attn_hook(self, layer: int, kind: str) -> Callable[[Tensor, Any], Tensor | None]:
        graph = self.graph

        def hook(x: Tensor, hook: Any) -> Tensor | None:
            if kind == "q":  # fires first: compute the whole layer's attention inputs at once
                c0, c1, _ = graph.receiver_block(layer)
                n_groups = 1 + layer * (1 + int(graph.has_mlp))
                add = self.contribution(n_groups, c0, c1, None)
                h, kv = graph.n_heads, graph.n_kv_heads
                self.pending = {} if add is None else {"q": add[:, :, :, :h], "k": add[:, :, :, h:h + kv],
                                                       "v": add[:, :, :, h + kv:]}
            add_k = self.pending.get(kind)
            if add_k is None:
                return None
            return x + add_k.reshape(x.shape)

        return hook

    def mlp_hook(self, layer: int) -> Callable[[Tensor, Any], Tensor | None]:
        graph = self.graph

        def hook(x: Tensor, hook: Any) -> Tensor | None:
            _, _, c = graph.receiver_block(layer)
            n_groups = 1 + layer * 2 + (0 if graph.parallel else 1)
            add = self.contribution(n_groups, c - 1, c, None)
            return None if add is None else x + add.reshape(x.shape)

        return hook


def _shared_prefix(graph: Graph, masks: Tensor) -> int:
    """The first layer whose receivers' masks differ between variants (0: none shared, or gradients)."""
    if masks.shape[0] == 1 or masks.requires_grad:
        return 0
    cols = (masks != masks[:1]).any(dim=0).any(dim=0).nonzero().flatten()
    if cols.numel() == 0:
        return graph.n_layers
    per = graph.receiver_block(1)[0] if graph.n_layers > 1 else graph.receiver_block(0)[2]
    return min(int(cols[0]) // per, graph.n_layers)


def masked_sum(d: Tensor, block: Tensor) -> Tensor:
    """Sender differences d [V|1 n B p D] summed by masks [V|1 n r] -> [V r B p D].

    Each variant's term is its own GEMM ``masks^T [r n] @ d [n B*p*D]`` with the receiver columns as rows
    (at least 4, zero-padded: fewer rows take a GEMV path with another summation order). CPU GEMMs give a
    row the same bits whatever the other rows are and however many there are, so a variant's result does
    not depend on what shares its call: variants with shared differences stack their rows into one GEMM,
    per-variant differences run one batched GEMM (per batch the same bits as the plain one). ACDC's
    resumed forward (``circuits/resume.py``) relies on this to reproduce the one-variant forward bit for bit
    (columns are not so: N = 1 takes a GEMV path and a column's bits can depend on N).
    """
    vd, n, b, p, dm = d.shape
    vb, _, r = block.shape
    v = max(vd, vb)
    rows = max(r, 4)
    mt = block.transpose(1, 2)
    if rows > r:
        mt = torch.cat([mt, mt.new_zeros(vb, rows - r, n)], dim=1)
    a = d.reshape(vd, n, b * p * dm)
    if vd == 1:  # one GEMM, every variant's rows stacked
        out = (mt.reshape(vb * rows, n) @ a[0]).view(vb, rows, -1)
    else:
        out = torch.bmm(mt.expand(v, -1, -1) if vb == 1 else mt, a)
    return out.view(v, rows, b, p, dm)[:, :r]


def _weighted(d: Tensor, block: Tensor) -> Tensor:
    """Fixed differences d [V|1 B p D s] times masks [V s r] -> [V B p D r], one matmul, no copy of ``d``
    (the gradient methods' layout; ``masked_sum`` is the bit-stable one)."""
    vd, b, p, dm, n = d.shape
    v, _, r = block.shape
    if vd == 1:  # shared differences (fixed ones, or one variant): one GEMM over every variant's columns
        out = d[0].reshape(b * p * dm, n) @ block.permute(1, 0, 2).reshape(n, v * r)  # a strided view of d
        return out.view(b, p, dm, v, r).permute(3, 0, 1, 2, 4)
    return torch.bmm(d.reshape(v, b * p * dm, n), block).view(v, b, p, dm, r)


def per_variant_metric(metric: MetricFn, logits: Tensor, n_variants: int) -> Float[Tensor, "variants batch"]:
    """Apply ``metric`` (per-example, [batch pos vocab] -> [batch]) to each variant's rows."""
    rows = logits.shape[0] // n_variants
    out = [check_metric_output(metric(logits[v * rows:(v + 1) * rows]), rows) for v in range(n_variants)]
    return torch.stack(out)


def check_metric_output(value: Any, batch: int) -> Tensor:
    """The metric must return one float per example [batch]."""
    if not isinstance(value, Tensor) or value.shape != (batch,) or not value.is_floating_point():
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ShapeError(f"metric must return one float per example, shape [batch={batch}]; got {got}. "
                         "A circuit metric maps logits [batch pos vocab] to per-example values (do not average).")
    return value


def check_pair(clean: Tensor, corrupted: Tensor) -> None:
    """Clean and corrupted token batches must be int [batch pos] of the same shape."""
    for name, t in (("clean", clean), ("corrupted", corrupted)):
        if not isinstance(t, Tensor) or t.dim() != 2 or t.is_floating_point():
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ShapeError(f"{name} tokens must be an int tensor [batch pos], got {got}")
    if clean.shape != corrupted.shape:
        raise ShapeError(f"clean and corrupted tokens must have the same shape [batch pos] (position by position "
                         f"pairs); got clean {tuple(clean.shape)} and corrupted {tuple(corrupted.shape)}")


__all__ = ["Ablation", "MetricFn", "SenderGroup", "ablate", "head_results", "head_z_hook", "check_masks", "check_metric_output", "check_pair",
           "fixed_differences", "masked_sum", "patch_values", "patched_logits", "per_variant_metric", "sender_groups", "sender_outputs"]
