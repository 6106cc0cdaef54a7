"""QK attribution of the strongest kept attention edges of a pruned graph (what the web app's graph page shows
when an edge is clicked).

An edge between two positions passes through attention: from the source's layer (its MLP writes after that
layer's attention) up to the target's layer. For each of the ``n`` strongest kept cross-position edges, the head
carrying it is taken, as ``main_attention_edge`` does for the strongest one, to be the head attending most from
the target's position to the source's in those layers (all patterns from one cached forward), and its attention
score is decomposed by ``qk_attribution``. Edges sharing a (layer, head, query, key) share one decomposition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mechscope.attribution.graph import AttributionGraph
from mechscope.attribution.prune import PrunedGraph
from mechscope.attribution.qk import qk_attribution
from mechscope.dictionaries.clt import CrossLayerTranscoder
from mechscope.dictionaries.transcoder import Transcoder
from mechscope.errors import ConfigError


def attention_edges(model: Any, tokens: Tensor, graph: AttributionGraph, pruned: PrunedGraph,
                    n: int) -> list[tuple[int, int, tuple[int, int, int, int]]]:
    """``(target node, source node, (layer, head, query_pos, key_pos))`` for the ``n`` strongest kept edges
    that cross positions (by |weight|); edges with no attention layer between their ends are skipped."""
    if n < 0:
        raise ConfigError(f"the number of QK edges must be >= 0, got {n}")
    layer, pos = graph.node_layer_pos()
    tgt, src = pruned.edge_mask.nonzero(as_tuple=True)
    cross = pos[tgt] != pos[src]
    tgt, src = tgt[cross], src[cross]
    if n == 0 or tgt.numel() == 0:
        return []
    order = graph.adjacency[tgt, src].abs().argsort(descending=True)[:n]
    tgt, src = tgt[order], src[order]
    n_layers = model.cfg.n_layers
    lo = (layer[src] + 1).clamp(min=0)
    hi = layer[tgt].clamp(max=n_layers - 1)  # logits (layer n_layers) read after the last layer's attention
    keep = lo <= hi
    tgt, src, lo, hi = tgt[keep], src[keep], lo[keep], hi[keep]
    if tgt.numel() == 0:
        return []
    first, last = int(lo.min()), int(hi.max())
    names = [f"blocks.{ly}.attn.hook_pattern" for ly in range(first, last + 1)]
    toks = tokens if tokens.dim() == 2 else tokens[None]
    with torch.no_grad():
        _, cache = model.run_with_cache(toks.long(), names=names)
    pats = torch.stack([cache[nm][0] for nm in names])  # [layers heads query key]
    q, k = pos[tgt], pos[src]
    per_edge = pats[:, :, q, k].permute(2, 0, 1)  # [edges layers heads]
    span = torch.arange(first, last + 1)
    allowed = (span[None] >= lo[:, None]) & (span[None] <= hi[:, None])  # [edges layers]
    per_edge = per_edge.masked_fill(~allowed[:, :, None], -1.0)
    flat = per_edge.flatten(1).argmax(-1)
    n_heads = pats.shape[1]
    return [(int(t), int(s), (first + int(f) // n_heads, int(f) % n_heads, int(qq), int(kk)))
            for t, s, f, qq, kk in zip(tgt, src, flat, q, k)]


def qk_edges_json(model: Any, tokens: Tensor, transcoders: CrossLayerTranscoder | Sequence[Transcoder],
                  graph: AttributionGraph, pruned: PrunedGraph, n: int = 8, k: int = 10) -> list[dict[str, Any]]:
    """For each edge of ``attention_edges``: ``{"source", "target", "weight"}`` (node names) plus the QK
    attribution's JSON (layer, head, positions, score, sum of terms, top ``k`` terms)."""
    names = graph.node_names()
    done: dict[tuple[int, int, int, int], dict[str, Any]] = {}
    out = []
    for t, s, where in attention_edges(model, tokens, graph, pruned, n):
        if where not in done:
            done[where] = qk_attribution(model, tokens, transcoders, *where).to_json(k)
        out.append({"source": names[s], "target": names[t], "weight": float(graph.adjacency[t, s]), **done[where]})
    return out


__all__ = ["attention_edges", "qk_edges_json"]
