"""Max-activating contexts of a split family: one small-dictionary latent and the larger latents matched to it.

``splits`` (``run.py``) names families by their top tokens; children of one family often share a token and
differ by what surrounds it, which only contexts show. :func:`held_out_sequences` keeps the held-out
sequences whole (``held_out_rows`` flattens them), :func:`family_contexts` finds the parent's and each
child's top-activating positions in them and cuts a token window around each, and :func:`family_markdown`
renders a family as a markdown table (contexts escaped, the activating token marked) for docs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechscope.errors import ConfigError


def held_out_sequences(model: Any, hook: str, *, corpus: str, n_rows: int, seq_len: int = 128, batch_size: int = 8,
                       tokenizer: str = "auto") -> tuple[Tensor, Tensor, Tensor]:
    """``(rows [r d], sequences [n s], keep [n s])``: the rows of ``held_out_rows`` with the sequences they came from.

    ``rows`` are ``hook``'s activations at the kept positions (``sequences[keep]``, in order), at least
    ``n_rows`` of them (whole sequences), from the corpus's validation split.
    """
    from mechscope.activations.source import ActivationSource, SourceConfig
    from mechscope.experiments.dictionaries import corpus_split

    src = ActivationSource(model, [hook], corpus_split(model, corpus, "val", tokenizer),
                           SourceConfig(seq_len=seq_len, batch_size=batch_size))
    rows, seqs, keeps, have, s = [], [], [], 0, 0
    while have < n_rows and s < src.n_sequences:
        sq = src.sequences(s, s + batch_size)
        rows.append(src.activations(sq)[hook].float())
        seqs.append(sq)
        keeps.append(src.keep_mask(sq))
        have += rows[-1].shape[0]
        s += batch_size
    if have < n_rows:
        raise ConfigError(f"the validation split gives only {have} rows; ask for fewer --eval-rows")
    return torch.cat(rows), torch.cat(seqs), torch.cat(keeps)


@torch.no_grad()
def _columns(d: Any, rows: Float[Tensor, "r d"], latents: Sequence[int], batch: int = 2048) -> Float[Tensor, "r m"]:
    """Activations of ``latents`` of dictionary ``d`` on ``rows`` (encoded in batches; only those columns kept)."""
    idx = torch.as_tensor(list(latents), dtype=torch.long)
    return torch.cat([d.encode(rows[i:i + batch].to(d.W_dec.dtype))[:, idx].float()
                      for i in range(0, rows.shape[0], batch)])


def _examples(act: Float[Tensor, "n s"], seqs: Int[Tensor, "n s"], n: int, left: int, right: int,
              decode: Callable[[list[int]], str] | None) -> list[dict[str, Any]]:
    """The top ``n`` positions of ``act`` as token windows, skipping repeats of an already shown window (corpora
    repeat boilerplate, and the same text at the top three times says less than three different texts)."""
    flat = act.flatten()
    top = flat.topk(min(8 * n, flat.numel()))
    dec = decode if decode is not None else (lambda t: " ".join(f"<{x}>" for x in t))
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for v, i in zip(top.values.tolist(), top.indices.tolist()):
        if v <= 0 or len(out) == n:
            break
        r, c = divmod(i, act.shape[1])
        ids = seqs[r].tolist()
        win = (dec(ids[max(0, c - left):c]), dec([ids[c]]), dec(ids[c + 1:c + 1 + right]))
        if win in seen:
            continue
        seen.add(win)
        out.append({"act": round(v, 3), "sequence": r, "position": c, "left": win[0], "token": win[1],
                    "right": win[2]})
    return out


def family_contexts(small: Any, large: Any, parent: int, rows: Float[Tensor, "r d"], seqs: Int[Tensor, "n s"],
                    keep: Bool[Tensor, "n s"], *, threshold: float = 0.5, n_examples: int = 3, left: int = 10,
                    right: int = 3, decode: Callable[[list[int]], str] | None = None) -> dict[str, Any]:
    """The parent latent ``parent`` of ``small``, its children in ``large`` (decoder cosine >= ``threshold``)
    and each one's top ``n_examples`` contexts (``left`` tokens, the activating token, ``right`` tokens).
    """
    from mechscope.dictionaries.scaling import match_latents

    if not 0 <= parent < small.cfg.d_sae:
        raise ConfigError(f"parent must be a latent of the small dictionary (0..{small.cfg.d_sae - 1}), got {parent}")
    if int(keep.sum()) != rows.shape[0]:
        raise ConfigError(f"keep marks {int(keep.sum())} positions but there are {rows.shape[0]} rows")
    m = match_latents(small.W_dec.detach().float().numpy(), large.W_dec.detach().float().numpy(), threshold)
    kids = [int(c) for c in (torch.as_tensor(m["parent"]) == parent).nonzero().flatten().tolist()]
    kids.sort(key=lambda c: -float(m["cosine"][c]))
    cols = torch.cat([_columns(small, rows, [parent]), _columns(large, rows, kids)], 1) if kids \
        else _columns(small, rows, [parent])
    grid = torch.zeros(*keep.shape, cols.shape[1])
    grid[keep] = cols

    def entry(j: int) -> dict[str, Any]:
        return {"freq": float((cols[:, j] > 0).float().mean()),
                "examples": _examples(grid[..., j], seqs, n_examples, left, right, decode)}

    return {"small_width": small.cfg.d_sae, "large_width": large.cfg.d_sae, "threshold": threshold,
            "parent": {"latent": parent} | entry(0),
            "children": [{"latent": c, "cosine": round(float(m["cosine"][c]), 3)} | entry(i + 1)
                         for i, c in enumerate(kids)]}


_MD = str.maketrans({c: "\\" + c for c in "\\`*_[]|#~"} | {"<": "&lt;", ">": "&gt;", "&": "&amp;",
                                                          "\n": "⏎", "\r": "", "\t": "⇥"})


def md_escape(text: str) -> str:
    """``text`` safe inside a markdown table cell (markup characters escaped, newlines shown as ⏎)."""
    return text.translate(_MD)


def _context_md(e: dict[str, Any]) -> str:
    tok = md_escape(e["token"]).replace(" ", "␣")  # the leading space matters ("(" vs " (")
    # <b>, not **: a ``**`` run between punctuation (⟧) and a letter is not a closing delimiter in CommonMark
    return f"{md_escape(e['left'])}<b>⟦{tok}⟧</b>{md_escape(e['right'])} ({e['act']:.2g})"


def family_markdown(fam: dict[str, Any]) -> str:
    """One family as a markdown table: a row per latent (parent first), its top contexts joined by ``<br>``."""
    head = (f"{fam['small_width']} → {fam['large_width']}, parent {fam['parent']['latent']}\n\n"
            "| latent | decoder cos | fires on | top contexts (activating token ⟦marked⟧, ␣ = space; activation) |\n"
            "|---|---|---|---|\n")
    lines = []
    for role, e in [("parent", fam["parent"])] + [("child", c) for c in fam["children"]]:
        cos = "" if role == "parent" else f"{e['cosine']:.2f}"
        ctx = "<br>".join(_context_md(x) for x in e["examples"]) or "(never fires)"
        lines.append(f"| {role} {e['latent']} | {cos} | {100 * e['freq']:.2f}% | {ctx} |")
    return head + "\n".join(lines) + "\n"


__all__ = ["family_contexts", "family_markdown", "held_out_sequences", "md_escape"]
