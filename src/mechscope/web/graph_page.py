"""The interactive attribution-graph page: a ``graph.json`` written by ``mechscope attribute graph --out DIR``
drawn as an inline SVG (nodes by layer and position, edges by weight), with a small inline script that shows a
clicked node's details (token, activation, influence, feature label from the feature database, strongest
incoming and outgoing edges) or a clicked edge's weight and, for a cross-position edge the graph stores one for,
its QK attribution (which query / key components made the attention score).

The file is untrusted: ``graph_result`` keeps only the fields it knows, with the types it expects (a malformed
file is "not recognised", never trusted). Every string is escaped in the SVG and reaches the script as JSON
with ``<``, ``>``, ``&`` written as ``\\u003c`` etc. (so no ``</script>`` or ``<!--`` can end the data block);
the script writes text with ``textContent`` only.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mechscope.features.render import esc, page

MAX_NODES = 5_000
MAX_EDGES = 200_000
DRAWN_EDGES = 4_000
"""At most this many edges (the strongest by |weight|) are drawn; the rest are listed as omitted."""
MAX_BYTES = 50_000_000
MAX_TOKENS = 4_096
MAX_LAYERS = 1_000

Labels = dict[str, tuple[str, str]]
"""node id -> (label text, href of its feature page)."""


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _qk(d: Any) -> dict[str, Any] | None:
    """A QK attribution record with the expected fields, else None."""
    if not isinstance(d, dict) or not all(_int(d.get(k)) for k in ("layer", "head", "query_pos", "key_pos")):
        return None
    if not all(_num(d.get(k)) for k in ("score", "sum_of_terms")) or not isinstance(d.get("top_terms"), list):
        return None
    terms = [{"query": t["query"], "key": t["key"], "term": float(t["term"])} for t in d["top_terms"][:50]
             if isinstance(t, dict) and isinstance(t.get("query"), str) and isinstance(t.get("key"), str)
             and _num(t.get("term"))]
    out: dict[str, Any] = {k: int(d[k]) for k in ("layer", "head", "query_pos", "key_pos")}
    out |= {"score": float(d["score"]), "sum_of_terms": float(d["sum_of_terms"]), "top_terms": terms}
    for k in ("source", "target"):
        if isinstance(d.get(k), str):
            out[k] = d[k]
    return out


def graph_result(path: Path) -> dict[str, Any] | None:
    """The attribution graph in ``path`` if it is one, reduced to the fields this page uses; else None."""
    if not path.is_file() or path.stat().st_size > MAX_BYTES:
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(d, dict) or not isinstance(d.get("nodes"), list) or not isinstance(d.get("edges"), list):
        return None
    tokens = d.get("tokens")
    if not isinstance(tokens, list) or not 0 < len(tokens) <= MAX_TOKENS or not all(isinstance(t, str) for t in tokens):
        return None
    if len(d["nodes"]) > MAX_NODES or len(d["edges"]) > MAX_EDGES:
        return None
    nodes = []
    for n in d["nodes"]:
        if not (isinstance(n, dict) and isinstance(n.get("id"), str) and _int(n.get("layer")) and _int(n.get("pos"))
                and _num(n.get("influence", 0.0))):
            return None
        if not (0 <= n["pos"] < len(tokens) and -1 <= n["layer"] <= MAX_LAYERS):  # the picture's size follows these
            return None
        row: dict[str, Any] = {"id": n["id"], "layer": int(n["layer"]), "pos": int(n["pos"]),
                               "influence": float(n.get("influence", 0.0))}
        for k in ("activation", "probability"):
            if _num(n.get(k)):
                row[k] = float(n[k])
        if isinstance(n.get("token"), str):
            row["token"] = n["token"]
        nodes.append(row)
    ids = {n["id"] for n in nodes}
    if len(ids) != len(nodes):
        return None
    edges = []
    for e in d["edges"]:
        if not (isinstance(e, dict) and e.get("source") in ids and e.get("target") in ids and _num(e.get("weight"))):
            return None
        edges.append({"source": e["source"], "target": e["target"], "weight": float(e["weight"])})
    raw_qk: list[Any] = d["qk_edges"] if isinstance(d.get("qk_edges"), list) else []
    qk = [q for q in (_qk(x) for x in raw_qk[:MAX_NODES]) if q is not None]
    main = _qk(d.get("qk_main_edge"))
    scores = {k: float(d[k]) for k in ("replacement_score", "completeness_score") if _num(d.get(k))}
    hooks = d.get("read_hooks")
    read_hooks = ({str(k): v for k, v in hooks.items() if isinstance(v, str)} if isinstance(hooks, dict) else {})
    logits = [{"token": t["token"], "probability": float(t["probability"])} for t in d.get("top_logits") or []
              if isinstance(t, dict) and isinstance(t.get("token"), str) and _num(t.get("probability"))]
    return {"tokens": tokens, "nodes": nodes, "edges": edges, "qk_edges": qk, "qk_main_edge": main,
            "scores": scores, "read_hooks": read_hooks, "top_logits": logits}


def feature_labels(graph: dict[str, Any], dictionaries: Sequence[dict[str, Any]],
                   explanations: Callable[[str], dict[int, str]], link: Callable[[str, int], str]) -> Labels:
    """Labels of the feature nodes (``m{L}.f{i}@{pos}``) from the feature set harvested at the hook layer ``L``'s
    features read (``read_hooks`` in the graph): the feature set with that hook, if exactly one has it (several
    are ambiguous: no labels for that layer). Unexplained features get ``""`` and still a link."""
    by_hook: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in dictionaries:
        by_hook[str(d["hook"])].append(d)
    out: Labels = {}
    cache: dict[str, dict[int, str]] = {}
    for n in graph["nodes"]:
        head, _, _ = n["id"].partition("@")
        layer, dot, feat = head.partition(".f")
        if not (dot and layer.startswith("m") and feat.isdigit()):
            continue
        found = by_hook.get(graph["read_hooks"].get(layer[1:], ""), [])
        if len(found) != 1 or int(feat) >= int(found[0]["n_features"]):
            continue
        name = str(found[0]["name"])
        if name not in cache:
            cache[name] = explanations(name)
        out[n["id"]] = (cache[name].get(int(feat), ""), link(name, int(feat)))
    return out


def _safe_json(data: Any) -> str:
    """JSON for a ``<script type="application/json">`` block: no ``<``, ``>`` or ``&`` left to close it."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _kind(node_id: str) -> str:
    if node_id.startswith("input@"):
        return "token"
    if node_id.startswith("logits."):
        return "logit"
    return "error" if ".err@" in node_id else "feature"


def graph_svg(graph: dict[str, Any], drawn: list[int], labels: Labels) -> str:
    """The SVG: a row per layer that has kept nodes (tokens at the bottom, logits at the top), a column per
    position; every node carries ``data-n`` and every drawn edge ``data-e`` (indices into the page's data)."""
    nodes, edges, tokens = graph["nodes"], graph["edges"], graph["tokens"]
    n_pos = len(tokens)
    layers = sorted({n["layer"] for n in nodes}, reverse=True)
    cells: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, n in enumerate(nodes):
        cells[(n["layer"], n["pos"])].append(i)
    cw = max(56, min(130, 1100 // max(n_pos, 1)))
    per_line = max(1, (cw - 8) // 9)
    heights = {ly: 26 + 9 * max((math.ceil(len(v) / per_line) for (c, _), v in cells.items() if c == ly), default=1)
               for ly in layers}
    left, top = 64, 24
    ys: dict[int, float] = {}
    y = float(top)
    for ly in layers:
        ys[ly] = y
        y += heights[ly]
    width, height = left + cw * n_pos + 10, y + 40
    xy: dict[int, tuple[float, float]] = {}
    for (ly, p), members in cells.items():
        lines = math.ceil(len(members) / per_line)
        for j, i in enumerate(members):
            line, col = divmod(j, per_line)
            in_line = min(per_line, len(members) - line * per_line)
            x = left + cw * p + cw * (col + 1) / (in_line + 1)
            xy[i] = (x, ys[ly] + heights[ly] / 2 + 9 * (line - (lines - 1) / 2))
    out = [f'<svg id="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="10" style="background:#fff;border:1px solid #ddd">']
    for ly in layers:
        name = "tokens" if ly < 0 else "logits" if any(nodes[i]["id"].startswith("logits.") for (c, _), v in
                                                      cells.items() if c == ly for i in v) else f"L{ly}"
        out.append(f'<text x="6" y="{ys[ly] + heights[ly] / 2 + 3:.0f}" fill="#666">{esc(name)}</text>')
    for p in range(n_pos):
        tok = tokens[p] if p < len(tokens) else ""
        out.append(f'<text class="tok" x="{left + cw * p + cw / 2:.0f}" y="{height - 22}" text-anchor="middle">'
                   f'{esc(tok[:14])}</text><text x="{left + cw * p + cw / 2:.0f}" y="{height - 8}" '
                   f'text-anchor="middle" fill="#999">{p}</text>')
    index = {n["id"]: i for i, n in enumerate(nodes)}
    top_w = max((abs(edges[e]["weight"]) for e in drawn), default=1.0) or 1.0
    for e in drawn:
        s, t, w = index[edges[e]["source"]], index[edges[e]["target"]], edges[e]["weight"]
        (x1, y1), (x2, y2) = xy[s], xy[t]
        colour = "#2166ac" if w >= 0 else "#b2182b"
        rel = math.sqrt(abs(w) / top_w)  # weak edges thin and faint, strong ones wide and dark
        out.append(f'<line class="edge" data-e="{e}" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                   f'stroke="{colour}" stroke-width="{1.2 + 5 * rel:.2f}" stroke-opacity="{0.06 + 0.7 * rel:.2f}"/>')
    for i, n in enumerate(nodes):
        x, y = xy[i]
        kind = _kind(n["id"])
        title = n["id"] + (f" ({n['token']})" if "token" in n else "")
        if n["id"] in labels and labels[n["id"]][0]:
            title += ": " + labels[n["id"]][0]
        fill = {"token": "#1b7837", "logit": "#762a83", "error": "#999", "feature": "#e08214"}[kind]
        shape = (f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8"' if kind == "error"
                 else f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5"')
        out.append(f'{shape} class="node {kind}" data-n="{i}" fill="{fill}"><title>{esc(title)}</title>'
                   f'{"</rect>" if kind == "error" else "</circle>"}')
    out.append("</svg>")
    return "".join(out)


GRAPH_SCRIPT = """<script>
const G = JSON.parse(document.getElementById('graph-data').textContent);
const $ = (id) => document.getElementById(id);
const index = new Map(G.nodes.map((n, i) => [n.id, i]));
const labels = new Map(Object.entries(G.labels));
const qk = new Map(G.qk_edges.map(q => [q.source + ' -> ' + q.target, q]));
if (G.qk_main_edge && G.qk_main_edge.source) qk.set(G.qk_main_edge.source + ' -> ' + G.qk_main_edge.target, G.qk_main_edge);
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls; return e; }
function row(tbl, k, v) { const tr = el('tr'); tr.appendChild(el('td', k)); tr.appendChild(el('td', v)); tbl.appendChild(tr); }
function fmt(x) { return (x === undefined || x === null) ? '-' : (+x).toPrecision(4); }
function clear() { document.querySelectorAll('#graph .sel').forEach(e => e.classList.remove('sel')); }
function edgeList(title, list) {
  const box = el('div'); box.appendChild(el('h3', title));
  const tbl = el('table'); tbl.className = 'edges';
  list.slice(0, 12).forEach(e => { const tr = el('tr'); const a = el('a', G.edges[e].source + ' -> ' + G.edges[e].target);
    a.href = '#'; a.className = 'edge-link'; a.dataset.e = e;
    a.addEventListener('click', ev => { ev.preventDefault(); showEdge(e); });
    const td = el('td'); td.appendChild(a); tr.appendChild(td); tr.appendChild(el('td', fmt(G.edges[e].weight), 'num'));
    tbl.appendChild(tr); });
  if (!list.length) tbl.appendChild(el('tr', 'none', 'muted'));
  box.appendChild(tbl); return box;
}
function showNode(i) {
  const n = G.nodes[i], d = $('details'); clear(); d.replaceChildren();
  const c = document.querySelector('#graph [data-n="' + i + '"]'); if (c) c.classList.add('sel');
  d.appendChild(el('h2', n.id, 'node-id'));
  const tbl = el('table'); tbl.id = 'node-facts';
  row(tbl, 'kind', n.id.startsWith('input@') ? 'token' : n.id.startsWith('logits.') ? 'logit' : n.id.includes('.err@') ? 'error (unexplained MLP output)' : 'transcoder feature');
  row(tbl, 'layer', String(n.layer)); row(tbl, 'position', String(n.pos) + '  ' + (G.tokens[n.pos] ?? ''));
  if (n.token !== undefined) row(tbl, 'token', n.token);
  if (n.activation !== undefined) row(tbl, 'activation', fmt(n.activation));
  if (n.probability !== undefined) row(tbl, 'probability', fmt(n.probability));
  row(tbl, 'influence', fmt(n.influence));
  d.appendChild(tbl);
  const lab = labels.get(n.id);
  if (lab) { const p = el('p', 'label: '); p.id = 'node-label'; p.appendChild(el('span', lab[0] || '(not explained)', 'label'));
    p.appendChild(document.createTextNode(' ')); const a = el('a', 'feature page'); a.href = lab[1]; p.appendChild(a); d.appendChild(p); }
  const inc = [], outg = [];
  G.edges.forEach((e, k) => { if (e.target === n.id) inc.push(k); if (e.source === n.id) outg.push(k); });
  const byW = (a, b) => Math.abs(G.edges[b].weight) - Math.abs(G.edges[a].weight);
  inc.sort(byW); outg.sort(byW);
  inc.concat(outg).forEach(k => { const l = document.querySelector('#graph [data-e="' + k + '"]'); if (l) l.classList.add('sel'); });
  d.appendChild(edgeList('strongest inputs (' + inc.length + ')', inc));
  d.appendChild(edgeList('strongest outputs (' + outg.length + ')', outg));
}
function showEdge(k) {
  const e = G.edges[k], d = $('details'); clear(); d.replaceChildren();
  const l = document.querySelector('#graph [data-e="' + k + '"]'); if (l) l.classList.add('sel');
  d.appendChild(el('h2', e.source + ' -> ' + e.target, 'edge-id'));
  const tbl = el('table'); tbl.id = 'edge-facts'; row(tbl, 'direct effect (weight)', fmt(e.weight));
  const s = G.nodes[index.get(e.source)], t = G.nodes[index.get(e.target)];
  row(tbl, 'positions', s.pos + ' (' + (G.tokens[s.pos] ?? '') + ') -> ' + t.pos + ' (' + (G.tokens[t.pos] ?? '') + ')');
  d.appendChild(tbl);
  for (const id of [e.source, e.target]) { const b = el('button', 'open ' + id); b.addEventListener('click', () => showNode(index.get(id))); d.appendChild(b); }
  const q = qk.get(e.source + ' -> ' + e.target), box = el('div'); box.id = 'qk';
  if (s.pos === t.pos) box.appendChild(el('p', 'Same position: this effect does not pass through attention.', 'muted'));
  else if (!q) box.appendChild(el('p', 'No QK attribution stored for this edge (the graph keeps it for its strongest cross-position edges: attribute graph --qk-edges N).', 'muted'));
  else {
    box.appendChild(el('h3', 'QK attribution: layer ' + q.layer + ' head ' + q.head + ', query ' + q.query_pos + ' -> key ' + q.key_pos));
    box.appendChild(el('p', 'attention score ' + fmt(q.score) + ' = sum of terms ' + fmt(q.sum_of_terms) + '; largest terms:'));
    const tt = el('table'); tt.id = 'qk-terms'; const h = el('tr'); ['query component', 'key component', 'term'].forEach(x => h.appendChild(el('th', x))); tt.appendChild(h);
    q.top_terms.forEach(x => { const tr = el('tr'); tr.appendChild(el('td', x.query)); tr.appendChild(el('td', x.key)); tr.appendChild(el('td', fmt(x.term), 'num')); tt.appendChild(tr); });
    box.appendChild(tt);
  }
  d.appendChild(box);
}
document.querySelectorAll('#graph [data-n]').forEach(c => c.addEventListener('click', () => showNode(+c.dataset.n)));
document.querySelectorAll('#graph [data-e]').forEach(l => l.addEventListener('click', () => showEdge(+l.dataset.e)));
</script>"""

STYLE = ("<style>main{max-width:none}#graph .edge{cursor:pointer}#graph .edge:hover,#graph .edge.sel{stroke-opacity:1}"
         "#graph .node{cursor:pointer;stroke:#fff;stroke-width:1}#graph .node.sel{stroke:#000;stroke-width:2}"
         ".gwrap{display:flex;gap:16px;align-items:flex-start}.gwrap>div:first-child{overflow:auto;max-width:75vw}"
         "#details{min-width:300px;max-width:380px}#details h2{word-break:break-all}.edges a{font-family:monospace}"
         "</style>")


def graph_body(graph: dict[str, Any], name: str, labels: Labels) -> tuple[str, str]:
    """``(body HTML, script)`` of the graph page."""
    edges = graph["edges"]
    drawn = sorted(range(len(edges)), key=lambda e: -abs(edges[e]["weight"]))[:DRAWN_EDGES]
    scores = "".join(f"<tr><td>{esc(k)}</td><td class=num>{v:.4f}</td></tr>" for k, v in graph["scores"].items())
    logits = ", ".join(f"{esc(t['token'])} {t['probability']:.3f}" for t in graph["top_logits"][:10])
    n_feat = sum(_kind(n["id"]) == "feature" for n in graph["nodes"])
    n_labelled = sum(bool(text) for text, _ in labels.values())
    omitted = len(edges) - len(drawn)
    data = {"nodes": graph["nodes"], "edges": edges, "tokens": graph["tokens"], "qk_edges": graph["qk_edges"],
            "qk_main_edge": graph["qk_main_edge"], "labels": {k: list(v) for k, v in labels.items()}}
    body = (f"{STYLE}<h1>Attribution graph: {esc(name)}</h1>"
            f'<p id="prompt" class="ex">{esc("".join(graph["tokens"]))}</p>'
            f"<table id=scores>{scores}<tr><td>kept nodes / edges</td><td class=num>{len(graph['nodes'])} / "
            f"{len(edges)}</td></tr><tr><td>feature nodes (with an explanation)</td><td class=num>{n_feat} "
            f"({n_labelled})</td></tr><tr><td>top logits</td><td>{logits}</td></tr></table>"
            '<p class="muted">Rows: layers (tokens at the bottom, logits at the top); columns: positions. Orange: '
            "transcoder features, grey squares: error nodes, green: tokens, purple: logits. Edge width grows with "
            "|direct effect|, blue positive, red negative. Click a node for its details and edges, an edge for its "
            f"weight and QK attribution.{f' {omitted} weaker edges are not drawn.' if omitted else ''}</p>"
            f'<div class="gwrap"><div>{graph_svg(graph, drawn, labels)}</div><div id="details" class="card">'
            '<p class="muted">Click a node or an edge.</p></div></div>'
            f'<script type="application/json" id="graph-data">{_safe_json(data)}</script>')
    return body, GRAPH_SCRIPT


def graph_page(graph: dict[str, Any], name: str, labels: Labels, nav: str) -> str:
    """The whole page."""
    body, script = graph_body(graph, name, labels)
    return page(f"graph {name}", body, nav=nav, script=script)


__all__ = ["graph_result", "feature_labels", "graph_body", "graph_page", "graph_svg", "DRAWN_EDGES"]
