"""Attention patterns as self-contained interactive HTML (like CircuitsVis, rendered by us, fully offline).

:func:`attention_html` returns one ``<div>`` with the tokens as a row of boxes per head: hovering a token
(the query) shades every earlier token by how much that head attends to it, and shows the weights in a
tooltip; a small heatmap per head gives the whole [query key] pattern at a glance. Head buttons pick the
head shown in the token view. Data is embedded as JSON; the JS and CSS are a few dozen inline lines, no
library, no network, so the output works in a report, a docs page or a file opened from disk. Several
views can live on one page (each gets a unique id).
"""

from __future__ import annotations

import html
import itertools
import json
from collections.abc import Sequence

import torch
from torch import Tensor

from mechscope.errors import ShapeError


def script_json(data: object) -> str:
    """JSON safe to embed in an HTML ``<script>`` element: ``<``, ``>``, ``&`` and U+2028/2029 as escapes.

    Escaping only ``</`` is not enough: ``<!--`` followed by ``<script`` inside a script element switches
    the HTML parser into its "double escaped" state, where the closing ``</script>`` no longer ends the
    element and the rest of the page is swallowed. With no ``<`` left, no tag sequence can form; the
    JSON value is unchanged (``JSON.parse`` reads the escapes back).
    """
    text = json.dumps(data)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text

_COUNTER = itertools.count()

_CSS = """
.msattn{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;margin:.6em 0}
.msattn .heads button{margin:0 .25em .25em 0;border:1px solid #999;background:#f4f4f4;border-radius:3px;cursor:pointer}
.msattn .heads button.on{background:#2b6cb0;color:#fff;border-color:#2b6cb0}
.msattn .toks{line-height:2.1em}
.msattn .tok{display:inline-block;padding:0 2px;margin:1px;border:1px solid #ddd;border-radius:2px;white-space:pre}
.msattn .tok.q{outline:2px solid #c53030}
.msattn .tip{color:#444;min-height:1.4em}
.msattn .grid{display:flex;flex-wrap:wrap;gap:6px;margin-top:.4em}
.msattn .grid figure{margin:0;text-align:center;font-size:11px;cursor:pointer}
.msattn canvas{border:1px solid #ccc;image-rendering:pixelated}
"""

_JS = """
(function(){
const root=document.getElementById(ROOT_ID), d=JSON.parse(root.querySelector('script.data').textContent);
const toks=root.querySelector('.toks'), tip=root.querySelector('.tip'), heads=root.querySelector('.heads');
let head=0, q=null;
d.tokens.forEach((t,i)=>{const s=document.createElement('span');s.className='tok';s.textContent=t;
  s.onmouseenter=()=>{q=i;paint();};toks.appendChild(s);});
function paint(){const spans=toks.children, p=d.patterns[head];
  for(let k=0;k<spans.length;k++){spans[k].classList.toggle('q',k===q);
    const w=(q===null||k>q)?0:p[q][k]; spans[k].style.background='rgba(43,108,176,'+w.toFixed(3)+')';
    spans[k].style.color=w>0.6?'#fff':'#000';}
  if(q===null){tip.textContent='hover a token to see where '+d.labels[head]+' attends from it';return;}
  const top=p[q].map((w,k)=>[w,k]).filter(x=>x[1]<=q).sort((a,b)=>b[0]-a[0]).slice(0,3);
  tip.textContent=d.labels[head]+' from #'+q+' '+JSON.stringify(d.tokens[q])+': '+
    top.map(x=>'#'+x[1]+' '+JSON.stringify(d.tokens[x[1]])+' '+x[0].toFixed(2)).join(', ');}
d.labels.forEach((l,h)=>{const b=document.createElement('button');b.textContent=l;
  b.onclick=()=>{head=h;[...heads.children].forEach((c,j)=>c.classList.toggle('on',j===h));paint();};
  heads.appendChild(b);});
const grid=root.querySelector('.grid');
d.patterns.forEach((p,h)=>{const n=p.length, c=document.createElement('canvas'), f=document.createElement('figure');
  c.width=n;c.height=n;const sz=Math.max(60,Math.min(160,3*n));c.style.width=sz+'px';c.style.height=sz+'px';
  const ctx=c.getContext('2d'), img=ctx.createImageData(n,n);
  for(let i=0;i<n;i++)for(let j=0;j<n;j++){const w=j<=i?p[i][j]:0, o=4*(i*n+j);
    img.data[o]=255-212*w;img.data[o+1]=255-147*w;img.data[o+2]=255-79*w;img.data[o+3]=255;}
  ctx.putImageData(img,0,0);c.title=d.labels[h];c.onclick=()=>heads.children[h].onclick();
  f.appendChild(c);const cap=document.createElement('figcaption');cap.textContent=d.labels[h];f.appendChild(cap);
  grid.appendChild(f);});
heads.children[0].classList.add('on');paint();
})();
"""


def attention_html(tokens: Sequence[str], patterns: Tensor, labels: Sequence[str] | None = None,
                   title: str = "", decimals: int = 3) -> str:
    """Interactive HTML for attention ``patterns`` [n_heads query_pos key_pos] over ``tokens`` (str each).

    ``labels`` name the heads (default ``H0, H1, ...``, e.g. pass ``["L1.H6", ...]``). Weights are rounded
    to ``decimals`` places to keep the page small. The returned fragment includes its own CSS and JS.
    """
    if patterns.dim() == 2:
        patterns = patterns[None]
    n = len(tokens)
    if patterns.dim() != 3 or patterns.shape[1:] != (n, n):
        raise ShapeError(f"patterns: expected shape (n_heads, {n}, {n}) for {n} tokens, got {tuple(patterns.shape)}")
    labels = list(labels) if labels is not None else [f"H{h}" for h in range(patterns.shape[0])]
    if len(labels) != patterns.shape[0]:
        raise ShapeError(f"labels: expected {patterns.shape[0]} head labels, got {len(labels)}")
    data = {"tokens": [str(t) for t in tokens], "labels": labels,
            "patterns": torch.round(patterns.detach().float().clamp(0, 1), decimals=decimals).tolist()}
    root_id = f"msattn{next(_COUNTER)}"
    payload = script_json(data)  # tokens like "</script>" or "<!--<script>" must not end or alter the block
    heading = f"<div><strong>{html.escape(title)}</strong></div>" if title else ""
    js = _JS.replace("ROOT_ID", json.dumps(root_id))
    return (f'<div class="msattn" id="{root_id}"><style>{_CSS}</style>{heading}<div class="heads"></div>'
            f'<div class="toks"></div><div class="tip"></div><div class="grid"></div>'
            f'<script type="application/json" class="data">{payload}</script><script>{js}</script></div>')


def attention_page(path: str, fragments: Sequence[str], title: str = "attention patterns") -> None:
    """Write a standalone HTML page holding ``fragments`` (from :func:`attention_html`), atomically."""
    from pathlib import Path

    from mechscope.io_safety import atomic_write_text

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(fragments)
    atomic_write_text(p, f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                         f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>")
