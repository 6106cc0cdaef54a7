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

import torch

from mechscope.attribution.graph import AttributionGraph, PrunedGraph, normalize_matrix


def graph_svg(graph: AttributionGraph, pruned: PrunedGraph, token_labels: Sequence[str] | None = None,
              logit_labels: Sequence[str] | None = None, title: str = "") -> str:
    """The SVG document (a string) of the kept nodes and edges."""
    names = graph.node_names()
    layer, pos = graph.node_layer_pos()
    keep = pruned.node_mask.nonzero()[:, 0].tolist()
    L, P = graph.n_layers, graph.n_pos
    cw, rh, margin = 110, 70, 60
    width, height = margin * 2 + cw * P, margin * 2 + rh * (L + 2) + 20
    coords: dict[int, tuple[float, float]] = {}
    cells: dict[tuple[int, int], list[int]] = {}
    for n in keep:
        cells.setdefault((int(layer[n]), int(pos[n])), []).append(n)
    for (ly, p), ns in cells.items():
        y = float(margin + 20 + rh * (L - ly))  # logits (layer L) at the top, tokens (layer -1) at the bottom
        for j, n in enumerate(ns):
            x = margin + cw * p + cw * (j + 1) / (len(ns) + 1)
            coords[n] = (x, y)
    norm = normalize_matrix(graph.adjacency * pruned.edge_mask)
    signed = torch.sign(graph.adjacency)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="10">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{margin}" y="20" font-size="14">{html.escape(title)}</text>']
    for ly in range(-1, L + 1):
        y_row = margin + 20 + rh * (L - ly)
        label = "tokens" if ly == -1 else "logits" if ly == L else f"L{ly}"
        out.append(f'<text x="8" y="{y_row + 4}" fill="#666">{label}</text>')
    tgt, src = pruned.edge_mask.nonzero(as_tuple=True)
    for t, s in zip(tgt.tolist(), src.tolist()):
        if t not in coords or s not in coords:
            continue
        (x1, y1), (x2, y2) = coords[s], coords[t]
        w = float(norm[t, s])
        colour = "#2166ac" if float(signed[t, s]) >= 0 else "#b2182b"
        out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
                   f'stroke-opacity="0.6" stroke-width="{0.5 + 4 * w:.2f}"><title>{html.escape(names[s])} → '
                   f'{html.escape(names[t])}: {float(graph.adjacency[t, s]):.4g}</title></line>')
    for n, (x, y) in coords.items():
        name = names[n]
        tip = f"<title>{html.escape(name)}</title>"
        if ".err@" in name:
            out.append(f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="#999">{tip}</rect>')
        else:
            colour = "#1b7837" if name.startswith("input@") else "#762a83" if name.startswith("logits.") else "#e08214"
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{colour}">{tip}</circle>')
        label = name.split("@")[0]
        if name.startswith("input@") and token_labels is not None:
            label = token_labels[int(pos[n])]
        elif name.startswith("logits.") and logit_labels is not None:
            label = logit_labels[n - graph.logit_slice.start]
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


__all__ = ["graph_svg", "write_svg"]
