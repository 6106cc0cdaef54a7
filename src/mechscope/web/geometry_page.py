"""The feature-map page: an inline SVG scatter of a feature set's 2-D decoder map, coloured by cluster, and a
table of the clusters with their first members (no scripts, no external resources; every text escaped)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mechscope.features.render import Link, esc, page

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def scatter_svg(rows: Sequence[dict[str, Any]], dictionary: str, link: Link, explanations: dict[int, str],
                size: int = 640) -> str:
    """One linked circle per feature (title: id, cluster, explanation), scaled into a ``size`` square."""
    if not rows:
        return ""
    xs, ys = [float(r["x"]) for r in rows], [float(r["y"]) for r in rows]
    x0, y0 = min(xs), min(ys)
    sx, sy = (max(xs) - x0) or 1.0, (max(ys) - y0) or 1.0
    pad, inner = 10, size - 20
    dots = []
    for r, x, y in zip(rows, xs, ys, strict=True):
        f, c = int(r["feature"]), int(r["cluster"])
        title = f"#{f} cluster {c}" + (f": {explanations[f]}" if f in explanations else "")
        dots.append(f'<a href="{esc(link(dictionary, f))}"><circle class="pt" cx="{pad + inner * (x - x0) / sx:.1f}" '
                    f'cy="{pad + inner * (1 - (y - y0) / sy):.1f}" r="3" fill="{PALETTE[c % len(PALETTE)]}" '
                    f'fill-opacity="0.7"><title>{esc(title)}</title></circle></a>')
    return (f'<svg id="map" xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
            f'viewBox="0 0 {size} {size}" style="background:#fff;border:1px solid #ddd">{"".join(dots)}</svg>')


def geometry_page(dictionary: str, rows: Sequence[dict[str, Any]], clusters: Sequence[dict[str, Any]],
                  explanations: dict[int, str], link: Link, nav: str) -> str:
    """The whole map page of ``dictionary`` (or a note saying how to compute a map when none is stored)."""
    if not rows:
        body = (f"<h1>Feature map: {esc(dictionary)}</h1><p class=muted>No map stored for this feature set. A harvest "
                "stores one; for an older database run <code>mechscope features geometry --db ... --dictionary "
                "...</code>.</p>")
        return page(f"map {dictionary}", body, nav=nav)
    table = "".join(
        f'<tr><td><span style="color:{PALETTE[c["cluster"] % len(PALETTE)]}">&#9679;</span> {int(c["cluster"])}</td>'
        f'<td class="num">{int(c["size"])}</td><td>'
        + ", ".join(f'<a href="{esc(link(dictionary, m["feature"]))}">#{int(m["feature"])}</a>'
                    + (f' <span class="muted">{esc(m["explanation"])}</span>' if m["explanation"] else "")
                    for m in c["members"]) + "</td></tr>" for c in clusters)
    body = (f"<h1>Feature map: {esc(dictionary)}</h1><p class=muted>{len(rows)} features; {esc(rows[0]['method'])} of "
            "the unit write directions, colour = k-means cluster on decoder cosine. Hover a point for its id, click "
            f"to open it.</p>{scatter_svg(rows, dictionary, link, explanations)}<h2>Clusters</h2>"
            f'<table id="clusters"><tr><th>cluster</th><th>size</th><th>first members</th></tr>{table}</table>')
    return page(f"map {dictionary}", body, nav=nav)


__all__ = ["geometry_page", "scatter_svg", "PALETTE"]
