"""Pictures of circuits: a layered SVG written by hand (no graphviz), and faithfulness curves.

The SVG puts the embeddings at the bottom and the logits at the top, one row per layer with a box per head
and one for the MLP. Every kept edge is a line from its sender's box to its receiver's box, its width
proportional to |score| and its colour naming the receiver's input (query blue, key green, value orange,
MLP / logits grey). A grouped-query key/value receiver ``a{L}.kv{G}`` is drawn into the span of the query
heads that share it. Boxes of components in the circuit are filled; the others are faint outlines.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from mechscope.circuits.evaluate import FaithfulnessCurve
from mechscope.circuits.graph import Graph
from mechscope.circuits.scores import Circuit, EdgeScores

_COLOURS = {"q": "#1f77b4", "k": "#2ca02c", "v": "#ff7f0e", "mlp": "#555555", "logits": "#555555"}
_BOX_W, _BOX_H, _GAP, _ROW = 46, 18, 8, 44


def _box(graph: Graph, name: str) -> tuple[float, float, float]:
    """(x left, y top, width) of a component's box."""
    width = (graph.n_heads + 1) * (_BOX_W + _GAP)
    top = 20 + (graph.n_layers + 1) * _ROW
    if name == "input" or name == "logits":
        x = 20 + (width - 2 * _BOX_W) / 2
        return x, (top if name == "input" else 20), 2 * _BOX_W
    layer = int(name[1:].split(".")[0])
    y = top - (layer + 1) * _ROW
    if name.startswith("m"):
        return 20 + graph.n_heads * (_BOX_W + _GAP), y, _BOX_W
    part = name.split(".")[1]
    if part.startswith("kv"):  # the query heads sharing this key/value head
        rep = graph.n_heads // graph.n_kv_heads
        g = int(part[2:])
        return 20 + g * rep * (_BOX_W + _GAP), y, rep * (_BOX_W + _GAP) - _GAP
    return 20 + int(part[1:]) * (_BOX_W + _GAP), y, _BOX_W


def _anchor(graph: Graph, receiver: str) -> tuple[float, float, str]:
    """Where an edge ends: the bottom of the receiver's box, offset by q / k / v; and its colour."""
    kind = receiver[-2] if receiver.endswith(">") else ("logits" if receiver == "logits" else "mlp")
    x, y, w = _box(graph, receiver.split("<")[0])
    frac = {"q": 0.2, "k": 0.5, "v": 0.8}.get(kind, 0.5)
    return x + w * frac, y + _BOX_H, _COLOURS[kind]


def circuit_svg(circuit: Circuit, scores: EdgeScores | None = None, *, title: str = "",
                max_edges: int = 400) -> str:
    """The circuit as an SVG document (module docstring); at most ``max_edges`` edges, largest |score| first."""
    g = circuit.graph
    values = scores.to_dict() if scores is not None else {}
    edges = sorted(circuit.edges, key=lambda e: -abs(values.get(e, 1.0)))[:max_edges]
    top = max((abs(values.get(e, 1.0)) for e in edges), default=1.0) or 1.0
    width = 40 + (g.n_heads + 1) * (_BOX_W + _GAP)
    height = 60 + (g.n_layers + 2) * _ROW
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20}" '
           f'viewBox="0 0 {width} {height + 20}" font-family="sans-serif" font-size="9">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="4" y="{height + 14}" font-size="11">{html.escape(title)}</text>']
    kept = circuit.nodes()
    names = ["input", "logits"] + [n.name for n in g.senders if n.name != "input"]
    for name in names:
        x, y, w = _box(g, name)
        on = name in kept
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{_BOX_H}" rx="3" '
                   f'fill="{"#dde8f5" if on else "none"}" stroke="{"#333" if on else "#ccc"}"/>')
        label = name.replace("a", "", 1) if name.startswith("a") else name
        out.append(f'<text x="{x + w / 2:.1f}" y="{y + 12:.1f}" text-anchor="middle" '
                   f'fill="{"#000" if on else "#bbb"}">{html.escape(label)}</text>')
    for name in edges:
        sender, receiver = name.split("->")
        sx, sy, sw = _box(g, sender)
        ex, ey, colour = _anchor(g, receiver)
        stroke = 0.4 + 4.0 * abs(values.get(name, top)) / top
        out.append(f'<line x1="{sx + sw / 2:.1f}" y1="{sy:.1f}" x2="{ex:.1f}" y2="{ey:.1f}" stroke="{colour}" '
                   f'stroke-width="{stroke:.2f}" stroke-opacity="0.6"><title>{html.escape(name)} '
                   f'{values.get(name, float("nan")):.4g}</title></line>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write atomically (tmp -> fsync -> rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    return p


def faithfulness_figure(curves: dict[str, FaithfulnessCurve], title: str = "") -> Any:
    """Recovery vs fraction of edges kept, one line per method (a matplotlib ``Figure``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    for label, c in curves.items():
        xs = [max(f, 1e-4) for f in c.fractions]
        ax.plot(xs, c.recovery, marker="o", ms=3, label=f"{label} (CPR {c.cpr:.2f}, CMD {c.cmd:.2f})")
    ax.set_xscale("log")
    ax.axhline(1.0, color="#888", lw=0.8, ls="--")
    ax.axhline(0.0, color="#888", lw=0.8, ls=":")
    ax.set_xlabel("fraction of edges kept (top |score|)")
    ax.set_ylabel("normalised recovery")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


__all__ = ["circuit_svg", "faithfulness_figure", "write_text"]
