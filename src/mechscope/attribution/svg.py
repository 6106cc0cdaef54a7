"""Static SVG of a pruned attribution graph: nodes by layer (rows) and position (columns), no graphviz.

Tokens sit on the bottom row, logits on the top row, features and error nodes in the row of their layer
(several in one cell are spread across it). Edge width grows with |weight| (normalised per target row),
blue for positive and red for negative direct effects; error nodes are grey squares.
"""

from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechscope.attribution.graph import AttributionGraph, PrunedGraph, normalize_matrix


def graph_svg(graph: AttributionGraph, pruned: PrunedGraph, token_labels: Sequence[str] | None = None,
              logit_labels: Sequence[str] | None = None, title: str = "", max_edges: int | None = None) -> str:
    """The SVG document (a string) of the kept nodes and edges (the ``max_edges`` strongest, if given)."""
    names = graph.node_names()
    layer, pos = graph.node_layer_pos()
    keep = pruned.node_mask.nonzero()[:, 0].tolist()
    labels = {}
    for n in keep:
        if names[n].startswith("input@") and token_labels is not None:
            labels[names[n]] = token_labels[int(pos[n])]
        elif names[n].startswith("logits.") and logit_labels is not None:
            labels[names[n]] = logit_labels[n - graph.logit_slice.start]
    norm = normalize_matrix(graph.adjacency * pruned.edge_mask)
    tgt, src = pruned.edge_mask.nonzero(as_tuple=True)
    edges = [(names[s], names[t], float(graph.adjacency[t, s]), float(norm[t, s]))
             for t, s in zip(tgt.tolist(), src.tolist())]
    nodes = [(names[n], int(layer[n]), int(pos[n])) for n in keep]
    return _draw(nodes, edges, labels, graph.n_layers, graph.n_pos, title, max_edges)


def json_svg(data: dict[str, Any], title: str = "", max_edges: int | None = None) -> str:
    """The SVG of a saved ``graph.json`` (``attribute graph --out``); edge widths are normalised over each
    target's *kept* inputs (the full graph normalises over all of them)."""
    nodes = [(n["id"], int(n["layer"]), int(n["pos"])) for n in data["nodes"]]
    labels = {n["id"]: n["token"] for n in data["nodes"] if "token" in n}
    totals: dict[str, float] = {}
    for e in data["edges"]:
        totals[e["target"]] = totals.get(e["target"], 0.0) + abs(e["weight"])
    edges = [(e["source"], e["target"], e["weight"], abs(e["weight"]) / max(totals[e["target"]], 1e-30))
             for e in data["edges"]]
    n_layers = max(n[1] for n in nodes)
    return _draw(nodes, edges, labels, n_layers, len(data["tokens"]), title, max_edges)


def _draw(nodes: Sequence[tuple[str, int, int]], edges: Sequence[tuple[str, str, float, float]],
          labels: dict[str, str], L: int, P: int, title: str, max_edges: int | None) -> str:
    """Nodes ``(name, layer, pos)`` (tokens layer -1, logits layer ``L``); edges ``(source, target, weight,
    normalised |weight|)``."""
    cw, rh, margin = 110, 70, 60
    width, height = margin * 2 + cw * P, margin * 2 + rh * (L + 2) + 20
    coords: dict[str, tuple[float, float]] = {}
    cells: dict[tuple[int, int], list[str]] = {}
    for name, ly, p in nodes:
        cells.setdefault((ly, p), []).append(name)
    for (ly, p), ns in cells.items():
        y = float(margin + 20 + rh * (L - ly))  # logits (layer L) at the top, tokens (layer -1) at the bottom
        for j, name in enumerate(ns):
            coords[name] = (margin + cw * p + cw * (j + 1) / (len(ns) + 1), y)
    drawn = [e for e in edges if e[0] in coords and e[1] in coords]
    if max_edges is not None:
        drawn = sorted(drawn, key=lambda e: -e[3])[:max_edges]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="10">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{margin}" y="20" font-size="14">{html.escape(title)}</text>']
    for ly in range(-1, L + 1):
        y_row = margin + 20 + rh * (L - ly)
        label = "tokens" if ly == -1 else "logits" if ly == L else f"L{ly}"
        out.append(f'<text x="8" y="{y_row + 4}" fill="#666">{label}</text>')
    for s, t, weight, w in drawn:
        (x1, y1), (x2, y2) = coords[s], coords[t]
        colour = "#2166ac" if weight >= 0 else "#b2182b"
        out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
                   f'stroke-opacity="0.6" stroke-width="{0.5 + 4 * w:.2f}"><title>{html.escape(s)} → '
                   f'{html.escape(t)}: {weight:.4g}</title></line>')
    for name, (x, y) in coords.items():
        tip = f"<title>{html.escape(name)}</title>"
        if ".err@" in name:
            out.append(f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="#999">{tip}</rect>')
        else:
            colour = "#1b7837" if name.startswith("input@") else "#762a83" if name.startswith("logits.") else "#e08214"
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{colour}">{tip}</circle>')
        label = labels.get(name, name.split("@")[0])
        dy = 16 if name.startswith("input@") else -10
        out.append(f'<text x="{x:.1f}" y="{y + dy:.1f}" text-anchor="middle">{html.escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def write_svg(path: str | Path, svg: str) -> Path:
    """Write ``svg`` atomically (tmp, fsync, rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(svg)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    return p


__all__ = ["graph_svg", "json_svg", "write_svg"]
