"""Server-rendered pages of the web app: the browser, the prompt explorer and the steering playground.

Scripts are small, inline, and put server data into the page only through ``textContent`` (never
``innerHTML``), so text from the model, corpus or user is never interpreted as markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mechscope.features.render import esc, feature_list, page

NAV = ('<b>mechscope</b> &nbsp; <a href="/">features</a><a href="/prompt">prompt explorer</a>'
       '<a href="/steer">steering</a><a href="/runs/">runs</a><a href="/api/features?limit=20">API</a>')


def link(dictionary: str, feature: int) -> str:
    """URL of a feature page (the dictionary name is percent-encoded)."""
    from urllib.parse import quote

    return f"/features/{quote(dictionary, safe='')}/{int(feature)}"


def browser(rows: Sequence[dict[str, Any]], dictionaries: Sequence[dict[str, Any]], q: str, sort: str,
            dictionary: str, *, search_index: str = "") -> str:
    """The feature browser: search by explanation, sort by density or score, filter by dictionary (``search_index``:
    how the database answers the search, shown under the results)."""
    opts = "".join(f'<option value="{esc(d["name"])}"{" selected" if d["name"] == dictionary else ""}>'
                   f'{esc(d["name"])} ({int(d["n_features"])})</option>' for d in dictionaries)
    from urllib.parse import quote

    maps = " ".join(f'<a class="map-link" href="/geometry/{esc(quote(d["name"], safe=""))}">{esc(d["name"])}</a>'
                    for d in dictionaries)
    sorts = "".join(f'<option value="{s}"{" selected" if s == sort else ""}>{s}</option>'
                    for s in ("density", "score", "feature"))
    body = (f'<h1>Features</h1><form id="search" method="get" action="/">'
            f'<input id="q" name="q" value="{esc(q)}" placeholder="search explanations" size="40"> '
            f'<select name="dictionary" id="dictionary"><option value="">all dictionaries</option>{opts}</select> '
            f'<select name="sort" id="sort">{sorts}</select> <button type="submit">search</button></form>'
            f'<p class="muted">maps: {maps or "none"}</p>'
            f'<p class="muted">{len(rows)} shown</p>{feature_list(rows, link)}'
            + (f'<p class="muted" id="search-index">search index: {esc(search_index)}</p>' if search_index else ""))
    return page("mechscope features", body, nav=NAV)


PROMPT_SCRIPT = """<script>
const $ = (id) => document.getElementById(id);
let data = null;
function cell(text, cls) { const td = document.createElement('td'); td.textContent = text; if (cls) td.className = cls; return td; }
function drawAttention() {
  const l = +$('layer').value, h = +$('head').value, pat = data.attention[l][h], tbl = $('attention');
  tbl.replaceChildren();
  const head = document.createElement('tr'); head.appendChild(cell(''));
  data.tokens.forEach(t => head.appendChild(cell(t, 'muted')));
  tbl.appendChild(head);
  pat.forEach((row, q) => {
    const tr = document.createElement('tr'); tr.appendChild(cell(data.tokens[q], 'muted'));
    row.forEach((p, k) => { const td = cell(''); td.title = p.toFixed(3);
      td.style.background = 'rgba(32,48,160,' + p + ')'; td.style.minWidth = '14px'; tr.appendChild(td); });
    tbl.appendChild(tr); });
}
async function run(ev) {
  ev.preventDefault();
  const r = await fetch('/api/prompt', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({text: $('text').value, top_k: 5})});
  const out = await r.json();
  if (!r.ok) { $('error').textContent = out.detail; return; }
  $('error').textContent = ''; data = out;
  const toks = $('tokens'); toks.replaceChildren();
  data.tokens.forEach((t, i) => { const tr = document.createElement('tr'); tr.appendChild(cell(i, 'num'));
    tr.appendChild(cell(t)); tr.appendChild(cell(data.next[i].map(([s, p]) => s + ' ' + p.toFixed(3)).join('  ')));
    toks.appendChild(tr); });
  for (const [id, n] of [['layer', data.n_layers], ['head', data.n_heads]]) {
    const sel = $(id); sel.replaceChildren();
    for (let i = 0; i < n; i++) { const o = document.createElement('option'); o.value = i; o.textContent = i; sel.appendChild(o); }
  }
  $('result').hidden = false; drawAttention();
}
$('form').addEventListener('submit', run);
$('layer').addEventListener('change', drawAttention); $('head').addEventListener('change', drawAttention);
</script>"""


def prompt_page() -> str:
    """Prompt explorer: tokens, next-token top-k per position, attention pattern per layer and head."""
    body = ('<h1>Prompt explorer</h1><form id="form"><textarea id="text" rows="3" cols="80">When Mary and John went '
            'to the store, John gave a drink to</textarea><br><button type="submit" id="go">run</button></form>'
            '<p id="error" class="neg"></p><div id="result" hidden><h2>Tokens and next-token top-5</h2>'
            '<table id="tokens"></table><h2>Attention</h2>layer <select id="layer"></select> head '
            '<select id="head"></select><table id="attention"></table></div>')
    return page("prompt explorer", body, nav=NAV, script=PROMPT_SCRIPT)


STEER_SCRIPT = """<script>
const $ = (id) => document.getElementById(id);
$('form').addEventListener('submit', async (ev) => {
  ev.preventDefault(); $('status').textContent = 'generating...';
  const body = {prompt: $('prompt').value, dictionary: $('dictionary').value, feature: +$('feature').value,
                mode: $('mode').value, value: +$('value').value, max_new_tokens: +$('n').value};
  const r = await fetch('/api/steer', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                       body: JSON.stringify(body)});
  const out = await r.json();
  if (!r.ok) { $('status').textContent = out.detail; return; }
  $('status').textContent = 'done'; $('baseline').textContent = out.baseline; $('steered').textContent = out.steered;
});
</script>"""


def steer_page(dictionaries: Sequence[dict[str, Any]], dictionary: str, feature: int) -> str:
    """Steering playground: generate with one feature added or clamped, next to the unsteered text."""
    opts = "".join(f'<option value="{esc(d["name"])}"{" selected" if d["name"] == dictionary else ""}>'
                   f'{esc(d["name"])}</option>' for d in dictionaries)
    body = (f'<h1>Steering playground</h1><form id="form"><p>prompt <input id="prompt" size="60" value="The weather '
            f'today is"></p><p>dictionary <select id="dictionary">{opts}</select> feature <input id="feature" '
            f'type="number" min="0" value="{int(feature)}"> <select id="mode"><option value="add">add</option>'
            '<option value="clamp">clamp</option></select> value <input id="value" type="number" step="any" '
            'value="8"> tokens <input id="n" type="number" min="1" max="64" value="20"></p>'
            '<button type="submit" id="go">generate</button> <span id="status" class="muted"></span></form>'
            '<div class="grid"><div class="card"><h2>unsteered</h2><pre id="baseline" class="ex"></pre></div>'
            '<div class="card"><h2>steered</h2><pre id="steered" class="ex"></pre></div></div>')
    return page("steering", body, nav=NAV, script=STEER_SCRIPT)


def runs_page(entries: Sequence[tuple[str, str]], *, before: str = "") -> str:
    """A directory listing of a run directory (links to files inside it only), after ``before`` (escaped HTML:
    a recognised run's view, e.g. a circuit)."""
    items = "".join(f'<li><a href="{esc(href)}">{esc(name)}</a></li>' for name, href in entries)
    return page("runs", f"{before}<h1>Runs</h1><ul>{items or '<li class=muted>no run directories</li>'}</ul>", nav=NAV)


__all__ = ["NAV", "link", "browser", "prompt_page", "steer_page", "runs_page"]
