"""Resumed patched forwards: variants that differ only in one receiver's edges, started at its layer.

ACDC tests the edges into one receiver ``r`` (layer ``L``) at a time, in reverse topological order. At that
moment no receiver before layer ``L`` has a patched edge, so everything up to layer ``L`` is the clean
forward, and the candidate variants differ only in the mask column of ``r``. ``ResumeForward`` runs the
clean prefix once (``CleanPrefix``: every layer's input residual and every sender's clean difference
``patch - clean``) and then starts each batch of variants at layer ``L`` with ``model.run_blocks``; for the
``logits`` receiver only the final norm and unembedding run.

**The same bits as the full patched forward.** A receiver column's added input is, in the reference
``patched_logits``, the sum over sender groups in order of ``S_g = d_g @ m_g`` (one GEMM per group, N =
the call's column count; zero-mask groups add exact zeros). Here the same GEMMs with the same shapes run
and the sums keep the same order, only split where the work is shared: the groups before layer ``L`` (clean
differences) are folded once per mask state for every column but ``r`` (cached), column ``r``'s fold is
per variant (``bmm`` with the reference's per-variant shape where the variants' masks differ), and the
groups from layer ``L`` on (per-variant differences, masks equal across variants) are one GEMM over all
variants' rows. Row counts differ from the reference's, column counts never do: CPU GEMMs give the same
bits per row for any row count (>= 4) but not for any column count (N = 1 takes a GEMV path; see
``patchable._weighted``). Tested bit for bit against the one-edge-at-a-time reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from mechscope.circuits.graph import Graph
from mechscope.circuits.patchable import _PatchState, _row_stable, masked_sum, sender_groups


@dataclass(frozen=True)
class CleanPrefix:
    """The clean forward through the patchable forward's own code path (per-head inputs, ``hook_result``)."""

    resid: list[Tensor]
    """Residual [batch pos d_model] entering each block, and (last) after the final block."""
    diffs: list[Tensor]
    """Per sender group, ``patch - clean`` [1 batch pos d_model n] (the layout ``_weighted`` takes)."""


def clean_prefix(model: Any, graph: Graph, tokens: Int[Tensor, "batch pos"], patch: list[Tensor]) -> CleanPrefix:
    """Run the patchable forward with no edge patched once, keeping every block's input and every sender's
    difference. The hooks are those ``patched_logits`` attaches, so the numbers are its numbers."""
    groups = sender_groups(graph)
    m = torch.zeros(1, len(graph.senders), len(graph.receivers), dtype=patch[0].dtype)
    state = _PatchState(graph, groups, m, tokens.shape[0], patch, None, live_from=m)
    state.live = [True] * len(groups)  # compute every difference (nothing is added: the masks are zero)
    resid: list[Tensor] = []

    def keep(x: Tensor, hook: Any) -> None:
        resid.append(x)

    fwd: list[tuple[str, Any]] = [(g.hook, state.sender_hook(i)) for i, g in enumerate(groups)]
    for L in range(graph.n_layers):
        fwd += [(f"blocks.{L}.hook_{k}_input", state.attn_hook(L, k)) for k in ("q", "k", "v")]
        if graph.has_mlp:
            fwd.append((f"blocks.{L}.hook_mlp_in", state.mlp_hook(L)))
        fwd.append((f"blocks.{L}.hook_resid_pre", keep))
    with torch.no_grad(), model.hooks(fwd=fwd):
        final = model(tokens, stop_at_layer=graph.n_layers)
    return CleanPrefix(resid + [final], state.diffs)


class ResumeForward:
    """Logits of ACDC variants that differ only in one receiver's column, from the cached clean prefix."""

    def __init__(self, model: Any, graph: Graph, tokens: Int[Tensor, "batch pos"], patch: list[Tensor],
                 readout: int | None) -> None:
        self.model, self.graph, self.tokens, self.patch, self.readout = model, graph, tokens, patch, readout
        self.groups = sender_groups(graph)
        self.prefix = clean_prefix(model, graph, tokens, patch)
        self.shared: dict[tuple[int, int, int, int | None], tuple[Tensor, Tensor | None]] = {}
        self.forwards = 0

    def receiver_layer(self, col: int) -> int:
        """Block of receiver column ``col`` (n_layers for ``logits``)."""
        return self.graph.receivers[col].layer

    def first_varying_group(self, layer: int) -> int:
        """Groups before this index write before ``layer`` (their differences are the clean ones)."""
        return len(self.groups) if layer >= self.graph.n_layers else 1 + layer * (1 + int(self.graph.has_mlp))

    def applies(self, patched: Tensor, col: int) -> bool:
        """Whether per-edge variants ``patched`` [V n_edges] fit: no patched edge into a receiver before
        ``col``'s layer, and the variants differ only in edges into ``col``."""
        layer = self.receiver_layer(col)
        g = self.graph
        c_start = g.receiver_block(layer)[0] if layer < g.n_layers else len(g.receivers) - 1
        r = g.edge_cells[1]
        if bool(patched[:, r < c_start].any()):
            return False
        return not bool(((patched != patched[:1]).any(dim=0) & (r != col)).any())

    def logits(self, masks: Tensor, col: int) -> Tensor:
        """Logits [V*batch out_pos vocab] of the variants ``masks`` [V S R] (0/1, differing only in column
        ``col``; ``applies`` must hold for their per-edge form), the same bits as ``patched_logits`` of each variant alone."""
        g, model = self.graph, self.model
        m = masks.to(self.patch[0].dtype)
        V = m.shape[0]
        layer = self.receiver_layer(col)
        g0 = self.first_varying_group(layer)
        state = _ResumeState(self, m, col, g0)
        self.forwards += 1
        with torch.no_grad():
            if layer < g.n_layers:
                fwd: list[tuple[str, Any]] = [(grp.hook, state.sender_hook(i)) for i, grp in enumerate(self.groups)
                                              if i >= g0]
                for L in range(layer, g.n_layers):
                    fwd += [(f"blocks.{L}.hook_{k}_input", state.attn_hook(L, k)) for k in ("q", "k", "v")]
                    if g.has_mlp:
                        fwd.append((f"blocks.{L}.hook_mlp_in", state.mlp_hook(L)))
                with model.hooks(fwd=fwd):
                    resid = model.run_blocks(self.prefix.resid[layer].repeat(V, 1, 1), layer, g.n_layers)
            else:
                resid = self.prefix.resid[g.n_layers].repeat(V, 1, 1)
            if self.readout is not None:
                resid = resid[:, [self.readout]]
            c = len(g.receivers) - 1
            add = state.contribution(len(self.groups), c, c + 1, self.readout)
            if add is not None:
                resid = resid + add.reshape(resid.shape)
            return _row_stable(lambda x: model.unembed(model.ln_final(x)), resid)


class _ResumeState(_PatchState):
    """``_PatchState`` whose groups before ``g0`` hold the clean prefix's differences (their layers do not
    run) and whose contributions reuse what is shared between variants (module docstring)."""

    def __init__(self, owner: ResumeForward, masks: Tensor, col: int, g0: int) -> None:
        super().__init__(owner.graph, owner.groups, masks, owner.tokens.shape[0], owner.patch, None, live_from=masks)
        self.owner, self.col, self.g0 = owner, col, g0
        self.diffs = list(owner.prefix.diffs[:g0])
        self.same = (masks == masks[:1]).all(dim=0)  # [S R]: cells equal in every variant

    def contribution(self, n_groups: int, c0: int, c1: int, readout: int | None) -> Tensor | None:
        m, V = self.masks, self.V
        g0 = min(self.g0, n_groups)
        total = self._shared(g0, c0, c1, readout)  # [1 cols B p D]
        if c0 <= self.col < c1:
            own = self._column(g0, readout)  # [V B p D]
            if own is not None:
                base = total if total is not None else own.new_zeros(1, c1 - c0, *own.shape[1:])
                total = base.expand(V, *base.shape[1:]).clone()
                total[:, self.col - c0] = own
        for grp, d in zip(self.groups[g0:n_groups], self.diffs[g0:n_groups]):
            rows = slice(grp.start, grp.start + grp.size)
            block = m[:, rows, c0:c1]
            if d.numel() == 0 or not bool(block.any()):
                continue
            if readout is not None:
                d = d[:, :, :, [readout]]
            term = masked_sum(d, block[:1] if bool(self.same[rows, c0:c1].all()) else block)
            total = term if total is None else total + term
        if total is None:
            return None
        return total.expand(V, *total.shape[1:]).permute(0, 2, 3, 1, 4)

    def _shared(self, g0: int, c0: int, c1: int, readout: int | None) -> Tensor | None:
        """Fold over the clean groups ``< g0`` into columns ``c0:c1`` with the masks every variant shares
        (column ``col`` zeroed): [1 cols B pos D] or None; cached while those masks stay the same."""
        n = sum(grp.size for grp in self.groups[:g0])
        block = self.masks[0, :n, c0:c1].clone()
        if c0 <= self.col < c1:
            block[:, self.col - c0] = 0
        key = (g0, c0, c1, readout)
        if any(k[0] != g0 for k in self.owner.shared):  # a new start layer: the old folds are of no more use
            self.owner.shared.clear()
        hit = self.owner.shared.get(key)
        if hit is not None and torch.equal(hit[0], block):
            return hit[1]
        total: Tensor | None = None
        for grp, d in zip(self.groups[:g0], self.diffs[:g0]):
            b = block[grp.start:grp.start + grp.size]
            if not bool(b.any()):
                continue
            if readout is not None:
                d = d[:, :, :, [readout]]
            term = masked_sum(d, b[None])
            total = term if total is None else total + term
        self.owner.shared[key] = (block, total)
        return total

    def _column(self, g0: int, readout: int | None) -> Tensor | None:
        """Per-variant fold of column ``col`` over the clean groups ``< g0``: [V B pos D] or None. A group's
        term is one GEMM whose rows are the variants' masks of that column (the reference's row for it)."""
        m = self.masks
        total: Tensor | None = None
        for grp, d in zip(self.groups[:g0], self.diffs[:g0]):
            col = m[:, grp.start:grp.start + grp.size, self.col]  # [V n]
            if not bool(col.any()):
                continue
            if readout is not None:
                d = d[:, :, :, [readout]]
            term = masked_sum(d, col.t()[None])[0]
            total = term if total is None else total + term
        return total


__all__ = ["CleanPrefix", "ResumeForward", "clean_prefix"]
