"""A small offline HTML report builder: sections of HTML, figures embedded as base64 PNG, no CDN.

Every picture mechscope makes can land in one self-contained ``index.html`` that opens without a
network. Plotting never changes global matplotlib style (we use the object API on a private figure).
"""

from __future__ import annotations

import base64
import html
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechscope.io_safety import atomic_write, atomic_write_text


@dataclass
class Section:
    """One section of a report: a title and trusted HTML body (escape user text with ``esc``)."""

    title: str
    body: str
    anchor: str = ""
    notes: list[str] = field(default_factory=list)


def esc(text: object) -> str:
    """HTML-escape any value's string form."""
    return html.escape(str(text))


def new_figure(width: float = 6.0, height: float = 4.0) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot global state, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Any) -> bytes:
    """PNG bytes of a matplotlib figure (tight layout; where that cannot fit the decorations, e.g. a long title
    over a small heatmap, the saved image grows to hold them instead of clipping them)."""
    buf = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.tight_layout()
    layout = [w for w in caught if "ight layout not applied" in str(w.message)]
    for w in caught:
        if w not in layout:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    fits = not layout
    fig.savefig(buf, format="png", **({} if fits else {"bbox_inches": "tight"}))
    return buf.getvalue()


def figure_html(fig: Any, alt: str = "") -> str:
    """An ``<img>`` tag embedding the figure as base64 PNG."""
    data = base64.b64encode(figure_png(fig)).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}"/>'


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write the figure as PNG (for docs) and return the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = figure_png(fig)
    atomic_write(p, lambda t: t.write_bytes(data))
    return p


def table_html(rows: Sequence[dict[str, Any]], floatfmt: str = "{:.3f}") -> str:
    """A plain HTML table from a list of dicts (keys of the first row are the columns)."""
    if not rows:
        return "<p><em>(empty)</em></p>"
    cols = list(rows[0])

    def fmt(v: Any) -> str:
        return esc(floatfmt.format(v)) if isinstance(v, float) else esc(v)

    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:90%}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto}img{max-width:100%}
.note{color:#666;font-size:90%}nav a{margin-right:1em}
"""


def render_report(title: str, sections: Sequence[Section], subtitle: str = "") -> str:
    """The whole HTML document for ``sections``."""
    nav = " ".join(f'<a href="#{esc(s.anchor or _slug(s.title))}">{esc(s.title)}</a>' for s in sections)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>"]
    if subtitle:
        parts.append(f"<p class='note'>{esc(subtitle)}</p>")
    parts.append(f"<nav>{nav}</nav>")
    for s in sections:
        parts.append(f'<h2 id="{esc(s.anchor or _slug(s.title))}">{esc(s.title)}</h2>{s.body}')
        parts.extend(f"<p class='note'>{esc(n)}</p>" for n in s.notes)
    parts.append("</body></html>")
    return "".join(parts)


def write_report(path: str | os.PathLike[str], title: str, sections: Sequence[Section],
                 subtitle: str = "") -> Path:
    """Write the report atomically and return its path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, render_report(title, sections, subtitle))
    return p


def _slug(s: str) -> str:
    return "".join(c.lower() if c.isalnum() else "-" for c in s).strip("-")
