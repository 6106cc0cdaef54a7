"""Pages for recognised files of a run directory: a patching result (``SweepResult.to_dict()`` JSON, written
next to the heatmap PNG by ``mechscope patch ... --out FIG``) as an inline-SVG heatmap, and a circuit directory
(``mechscope circuit discover --out DIR``: ``summary.json``, ``scores.json``, ``circuit.svg``) as its summary,
picture (an ``<img>``, so no script in the SVG can run) and strongest edges. Every string from the files is escaped;
anything malformed is shown as not recognised rather than trusted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mechscope.features.render import esc

MAX_CELLS = 20_000
MAX_BYTES = 50_000_000


def _load_json(path: Path) -> Any:
    if not path.is_file() or path.stat().st_size > MAX_BYTES:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _shape(values: Any) -> tuple[int, ...] | None:
    """Shape of a rectangular nested list of numbers, else None."""
    if isinstance(values, int | float):  # bool included
        return ()
    if not isinstance(values, list) or not values:
        return None
    shapes = {_shape(v) for v in values}
    if len(shapes) != 1 or None in shapes:
        return None
    inner = shapes.pop()
    return None if inner is None else (len(values), *inner)


def sweep_result(path: Path) -> dict[str, Any] | None:
    """The patching result in ``path`` if it is one (axes, labels and values agree), else None."""
    d = _load_json(path)
    if not isinstance(d, dict) or not {"axes", "labels", "values", "clean", "corrupted"} <= d.keys():
        return None
    axes, labels = d["axes"], d["labels"]
    if not (isinstance(axes, list) and 1 <= len(axes) <= 3 and isinstance(labels, dict)
            and all(isinstance(a, str) and isinstance(labels.get(a), list) for a in axes)):
        return None
    shape = _shape(d["values"])
    if shape != tuple(len(labels[a]) for a in axes) or math.prod(shape) > MAX_CELLS:
        return None
    if not all(isinstance(d[k], int | float) for k in ("clean", "corrupted")):
        return None
    return d


def _colour(v: float) -> str:
    """0 -> white, +1 -> blue, -1 -> red (clamped)."""
    t = max(-1.0, min(1.0, v))
    a, b = (255 - int(200 * t), 255 - int(140 * t)) if t >= 0 else (255 + int(140 * t), 255 + int(200 * t))
    return f"rgb({a},{b},255)" if t >= 0 else f"rgb(255,{a},{b})"


def heatmap_svg(grid: list[list[float]], rows: list[str], cols: list[str], title: str) -> str:
    """One heatmap panel: rows x cols cells of normalised values (hover title: labels and value)."""
    cw, ch, left, top = 18, 14, 90, 70
    cells = "".join(f'<rect x="{left + j * cw}" y="{top + i * ch}" width="{cw}" height="{ch}" fill="{_colour(v)}">'
                    f"<title>{esc(rows[i])} / {esc(cols[j])}: {v:.3f}</title></rect>"
                    for i, r in enumerate(grid) for j, v in enumerate(r))
    ylab = "".join(f'<text x="{left - 4}" y="{top + i * ch + 11}" text-anchor="end" font-size="10">{esc(r)[:14]}'
                   "</text>" for i, r in enumerate(rows))
    xlab = "".join(f'<text transform="translate({left + j * cw + 12},{top - 4}) rotate(-60)" font-size="10">'
                   f"{esc(c)[:14]}</text>" for j, c in enumerate(cols))
    w, h = left + cw * len(cols) + 10, top + ch * len(rows) + 10
    return (f'<figure><figcaption>{esc(title)}</figcaption><svg class="heatmap" xmlns="http://www.w3.org/2000/svg" '
            f'width="{w}" height="{h}">{xlab}{ylab}{cells}</svg></figure>')


def sweep_body(d: dict[str, Any], name: str) -> str:
    """The heatmap page body: values normalised to 0 = corrupted, 1 = clean; one panel per middle label."""
    clean, corrupted = float(d["clean"]), float(d["corrupted"])
    span = (clean - corrupted) or 1.0

    def norm(x: Any) -> Any:
        return [norm(v) for v in x] if isinstance(x, list) else (float(x) - corrupted) / span

    vals, axes, labels = norm(d["values"]), d["axes"], d["labels"]
    if len(axes) == 1:
        panels = [(str(axes[0]), [vals], ["value"], [str(x) for x in labels[axes[0]]])]
    elif len(axes) == 2:
        panels = [(f"{axes[0]} x {axes[1]}", vals, [str(x) for x in labels[axes[0]]], [str(x) for x in labels[axes[1]]])]
    else:
        mids = labels[axes[1]][:8]
        panels = [(f"{axes[1]} = {m}", [row[k] for row in vals], [str(x) for x in labels[axes[0]]],
                   [str(x) for x in labels[axes[2]]]) for k, m in enumerate(mids)]
    meta = "".join(f"<tr><td>{esc(k)}</td><td>{esc(d.get(k))}</td></tr>"
                   for k in ("sweep", "direction", "metric", "method", "clean", "corrupted"))
    figs = "".join(heatmap_svg(g, r, c, t) for t, g, r, c in panels)
    return (f"<h1>Patching result: {esc(name)}</h1><table>{meta}</table><p class=muted>colour: normalised metric, "
            f"0 = corrupted baseline (white), 1 = clean (blue), negative red.</p>{figs}")


def circuit_body(directory: Path, href: str, n_edges: int = 20) -> str | None:
    """The circuit page body for a ``circuit discover --out`` directory, or None if it is not one."""
    summary = _load_json(directory / "summary.json")
    if not isinstance(summary, dict) or not (directory / "circuit.svg").is_file():
        return None
    def cut(v: Any) -> str:  # shortened before escaping, so no entity is cut in half
        text = json.dumps(v) if isinstance(v, dict | list) else str(v)
        return esc(text if len(text) <= 300 else text[:300] + "…")

    rows = "".join(f"<tr><td>{esc(k)}</td><td>{cut(v)}</td></tr>" for k, v in summary.items())
    scores = _load_json(directory / "scores.json")
    edges = ""
    if isinstance(scores, dict):
        ranked = sorted(((str(k), float(v)) for k, v in scores.items() if isinstance(v, int | float)),
                        key=lambda kv: -abs(kv[1]))[:n_edges]
        edges = ("<h2>Strongest edges</h2><table id=edges>" + "".join(
            f'<tr><td>{esc(k)}</td><td class="num">{v:+.4f}</td></tr>' for k, v in ranked) + "</table>")
    return (f'<h1>Circuit: {esc(directory.name)}</h1><table id="summary">{rows}</table>'
            f'<p><img id="circuit" alt="circuit" src="{esc(href)}circuit.svg"></p>{edges}')


__all__ = ["sweep_result", "sweep_body", "circuit_body", "heatmap_svg"]
