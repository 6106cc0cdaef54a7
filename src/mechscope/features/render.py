"""The feature page (SAEDashboard's content) as self-contained HTML: no scripts needed, no external files.

Every string that came from a model, a corpus or a user (tokens, explanations, dictionary names) passes
through :func:`esc` (``html.escape`` with quotes), so text such as ``<script>`` or ``<!--`` shows as text.
The same functions serve ``mechscope features export`` (static files) and the web app (``mechscope serve``);
``link`` turns ``(dictionary, feature)`` into the URL of a neighbour's page.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

Link = Callable[[str, int], str]

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#20304a;color:#fff;padding:10px 20px}header a{color:#cfe0ff;margin-right:14px}
main{padding:16px 20px;max-width:1200px}h1{font-size:20px;margin:4px 0}h2{font-size:16px;margin:18px 0 6px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:14px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 12px}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #eee}
.num{text-align:right;font-variant-numeric:tabular-nums}.pos{color:#0a6b2a}.neg{color:#a3161a}
.ex{font-family:ui-monospace,monospace;font-size:13px;white-space:pre-wrap;word-break:break-all;margin:3px 0;
padding:3px 6px;background:#fff;border-left:3px solid #ccc}.ex .tok{border-radius:2px}
.ex .focus{outline:1px solid #e06000}.muted{color:#777}.score{font-weight:600}
input,select,button,textarea{font:inherit;padding:4px 6px}
"""


_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"})


def esc(value: Any) -> str:
    """HTML-escape any value, quotes too (``html.escape(..., quote=True)``'s output, via one ``translate``)."""
    return str(value).translate(_ESCAPES)


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}g}"


_VISIBLE = str.maketrans({"\n": "↵", "\t": "⇥"})


def show_token(tok: str) -> str:
    """A token for display: newlines and tabs made visible, then escaped."""
    return tok.translate(_VISIBLE).translate(_ESCAPES)


_SHOW = str.maketrans({"\n": "↵", "\t": "⇥", "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"})


def _show_all(tokens: list[str]) -> list[str]:
    """``show_token`` of every token with one ``translate`` (tokens joined by NUL, which no escape touches)."""
    parts = "\0".join(tokens).translate(_SHOW).split("\0")
    return parts if len(parts) == len(tokens) else [show_token(t) for t in tokens]  # a token held a NUL


def example_html(ex: dict[str, Any], scale: float) -> str:
    """One example window: every token shaded by this feature's activation on it (title = the value)."""
    tokens, acts, focus = ex["tokens"], ex["acts"], ex["focus"]
    if len(tokens) != len(acts):
        raise ValueError(f"an example has {len(tokens)} tokens but {len(acts)} activations")
    parts = _show_all(tokens)
    inv = 1.0 / scale if scale > 0 else 0.0
    for j, a in enumerate(acts):
        if a <= 0 and j != focus:  # most tokens of a window: plain text, no markup
            continue
        alpha = a * inv
        alpha = 1.0 if alpha > 1.0 else alpha
        span = '<span class="tok focus"' if j == focus else '<span class="tok"'
        parts[j] = (f'{span} title="{a:.3f}" style="background:rgba(255,120,0,{alpha:.2f})">{parts[j]}</span>'
                    if alpha > 0 else f'{span} title="{a:.3f}">{parts[j]}</span>')
    return f'<div class="ex"><span class="muted">{_fmt(ex["activation"], 3)}</span>  {"".join(parts)}</div>'


def histogram_svg(hist: dict[str, Any], width: int = 340, height: int = 90) -> str:
    """Bars of the activation histogram (log-spaced bins), as inline SVG."""
    counts, edges = hist["counts"], hist["edges"]
    top = max(counts) if counts and max(counts) > 0 else 1
    nz = [i for i, c in enumerate(counts) if c > 0]
    if not nz:
        return '<p class="muted">never fired</p>'
    lo, hi = max(nz[0] - 1, 0), min(nz[-1] + 2, len(counts))
    bw = width / (hi - lo)
    bars = "".join(f'<rect x="{(i - lo) * bw:.1f}" y="{height - 14 - (height - 14) * counts[i] / top:.1f}" '
                   f'width="{max(bw - 1, 1):.1f}" height="{(height - 14) * counts[i] / top:.1f}" fill="#e07000">'
                   f'<title>{edges[i]:.3g}–{edges[i + 1]:.3g}: {counts[i]}</title></rect>' for i in range(lo, hi))
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="activation histogram">{bars}'
            f'<text x="0" y="{height - 2}" font-size="10">{edges[lo]:.3g}</text>'
            f'<text x="{width}" y="{height - 2}" font-size="10" text-anchor="end">{edges[hi]:.3g}</text></svg>')


def _logits_table(rows: Sequence[Sequence[Any]] | None, cls: str) -> str:
    if not rows:
        return '<p class="muted">not defined at this hook</p>'
    body = "".join(f'<tr><td><code>{show_token(t)}</code></td><td class="num {cls}">{v:+.3f}</td></tr>'
                   for t, v in rows)
    return f"<table>{body}</table>"


def _neighbours(rows: Sequence[Sequence[Any]] | None, dictionary: str, link: Link, label: str) -> str:
    if not rows:
        return f'<p class="muted">no {label} neighbours</p>'
    items = "".join(f'<tr><td><a href="{esc(link(dictionary, int(j)))}">#{int(j)}</a></td>'
                    f'<td class="num">{v:.3f}</td></tr>' for j, v in rows)
    return f"<table><tr><th>feature</th><th>{esc(label)}</th></tr>{items}</table>"


def _explanations(feat: dict[str, Any]) -> str:
    if not feat.get("explanations"):
        return '<p class="muted">no explanation yet (<code>mechscope features explain</code>)</p>'
    scores: dict[str, list[str]] = {}
    for s in feat.get("scores", []):
        scores.setdefault(s["explainer"], []).append(f'{esc(s["method"])} <span class="score">{s["value"]:.2f}</span>')
    return "".join(f'<p class="explanation"><b>{esc(e["text"])}</b><br><span class="muted">{esc(e["explainer"])}'
                   f'</span> {" · ".join(scores.get(e["explainer"], []))}</p>' for e in feat["explanations"])


def feature_body(feat: dict[str, Any], link: Link) -> str:
    """The feature page's main content (without the page shell)."""
    d, i = feat["dictionary"], int(feat["feature"])
    scale = float(feat["max_act"]) or 1.0
    top = "".join(example_html(e, scale) for e in feat["top"]) or '<p class="muted">never fired</p>'
    groups: dict[int, list[dict[str, Any]]] = {}
    for e in feat["quantiles"]:
        groups.setdefault(int(e["quantile"]), []).append(e)
    quant = "".join(f'<h3 class="muted">quantile group {q + 1} of {len(groups)} (activation {_fmt(min(x["activation"] for x in es), 3)}'
                    f'–{_fmt(max(x["activation"] for x in es), 3)})</h3>' + "".join(example_html(x, scale) for x in es)
                    for q, es in sorted(groups.items(), reverse=True))
    return f"""<h1>{esc(d)} <span class="muted">#{i}</span></h1>
<div class="card">{_explanations(feat)}</div>
<div class="grid">
<div class="card"><h2>Activations</h2><table>
<tr><td>density</td><td class="num" id="density">{_fmt(feat["density"])}</td></tr>
<tr><td>mean activation</td><td class="num">{_fmt(feat["mean_act"])}</td></tr>
<tr><td>max activation</td><td class="num">{_fmt(feat["max_act"])}</td></tr>
<tr><td>tokens fired</td><td class="num">{int(feat["n_fired"])}</td></tr></table>
{histogram_svg(feat["histogram"])}</div>
<div class="card"><h2>Top logits</h2>{_logits_table(feat.get("top_logits"), "pos")}</div>
<div class="card"><h2>Bottom logits</h2>{_logits_table(feat.get("bottom_logits"), "neg")}</div>
<div class="card"><h2>Neighbours</h2>{_neighbours(feat.get("neighbours_cosine"), d, link, "decoder cosine")}
{_neighbours(feat.get("neighbours_coact"), d, link, "co-activation")}</div>
</div>
<h2>Max-activating examples</h2><div id="top-examples">{top}</div>
<h2>Quantile samples</h2><div id="quantiles">{quant or '<p class="muted">none</p>'}</div>"""


def page(title: str, body: str, *, nav: str = "", script: str = "") -> str:
    """A complete HTML document with the shared style (``title`` is escaped; ``body`` must already be)."""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
            f'<body><header>{nav or "<b>mechscope</b> features"}</header><main>{body}</main>{script}</body></html>')


def feature_page(feat: dict[str, Any], link: Link, *, nav: str = "") -> str:
    """The whole feature page."""
    return page(f"{feat['dictionary']} #{feat['feature']}", feature_body(feat, link), nav=nav)


def feature_list(rows: Sequence[dict[str, Any]], link: Link) -> str:
    """A table of features (search results) with density, max activation, explanation and score."""
    body = "".join(f'<tr><td><a class="feature-link" href="{esc(link(r["dictionary"], int(r["feature"])))}">'
                   f'{esc(r["dictionary"])} #{int(r["feature"])}</a></td><td class="num">{_fmt(r["density"])}</td>'
                   f'<td class="num">{_fmt(r["max_act"], 3)}</td><td class="num">{_fmt(r.get("score"), 2)}</td>'
                   f'<td>{esc(r.get("explanation") or "")}</td></tr>' for r in rows)
    return (f'<table id="features"><tr><th>feature</th><th>density</th><th>max</th><th>score</th>'
            f"<th>explanation</th></tr>{body}</table>")


__all__ = ["esc", "feature_page", "feature_body", "feature_list", "page", "example_html", "histogram_svg", "CSS"]
