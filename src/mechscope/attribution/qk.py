"""Attention (QK) attribution: which features at the query and key positions produced an attention score.

With the norm scale frozen at its value in the real forward, the query of head ``h`` at position ``q`` is a
linear function of the residual stream there, and the residual is a sum of components: the token (and
positional) embedding, each earlier layer's attention output (``a{L}``), each active transcoder feature's
decoder output (``m{L}.f{i}``), each layer's error (``m{L}.err``) and decoder bias / skip (``m{L}.bias``).
So is the key at position ``k``, and the score ``scale * q·k`` is the bilinear form

    score = sum_{i, j} scale * rot_q(norm_q(c_i) W_Q) · rot_k(norm_k(c'_j) W_K)

over query components ``c_i`` and key components ``c'_j`` (the norm's and projection's biases are one more
component, ``bias``, on each side). ``terms[i, j]`` is each pair's share; the terms sum to the score exactly.

Q/K norms (``attention.qk_norm``: Qwen3, Gemma 3) sit between the projection and the rotation; their scale is
frozen the same way, per head and position (``attn.q_norm.hook_scale`` / ``attn.k_norm.hook_scale`` of the real
forward, times the norm's weight), so ``norm_q`` above becomes ``qnorm(ln1(.) W_Q + b_Q)`` with both norms
linear and the terms still sum to the score. Sliding-window layers rotate with their own base
(``positional.local_rotary_base``); a key outside the window has no score (it is masked) and is refused, as
are shortformer positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mechscope.attribution.codes import LayerCode, layer_codes
from mechscope.dictionaries.clt import CrossLayerTranscoder
from mechscope.dictionaries.transcoder import Transcoder
from mechscope.errors import ConfigError
from mechscope.models.components.frozen_norm import frozen_norm
from mechscope.models.components.norm import LayerNorm, RMSNorm
from mechscope.models.components.rotary import apply_rotary, rotary_cos_sin


@dataclass(frozen=True)
class QKAttribution:
    """The bilinear decomposition of one attention score (see the module docstring)."""

    layer: int
    head: int
    query_pos: int
    key_pos: int
    query_names: list[str]
    key_names: list[str]
    terms: Tensor
    """[n_query_components n_key_components], summing to ``score``."""
    score: float
    """The attention score (pre-softmax, scaled) in the real forward."""

    def top(self, k: int = 10) -> list[tuple[str, str, float]]:
        """The ``k`` largest |terms| as (query component, key component, term)."""
        flat = self.terms.flatten()
        idx = flat.abs().argsort(descending=True)[:k]
        nk = self.terms.shape[1]
        return [(self.query_names[int(i) // nk], self.key_names[int(i) % nk], float(flat[i])) for i in idx]

    def to_json(self, k: int = 10) -> dict[str, Any]:
        return {"layer": self.layer, "head": self.head, "query_pos": self.query_pos, "key_pos": self.key_pos,
                "score": self.score, "sum_of_terms": float(self.terms.sum()),
                "top_terms": [{"query": q, "key": kk, "term": t} for q, kk, t in self.top(k)]}


def _components(model: Any, cache: Any, codes: list[LayerCode], layer: int, pos: int) -> tuple[list[str], Tensor]:
    """Names and vectors ``[n d_model]`` summing to ``blocks.{layer}.hook_resid_pre`` at ``pos``."""
    names, vecs = [f"input@{pos}"], [cache["hook_embed"][0, pos]]
    if "hook_pos_embed" in cache:
        names.append(f"pos@{pos}")
        vecs.append(cache["hook_pos_embed"][0, pos])
    written = {t: torch.zeros_like(vecs[0]) for t in range(layer)}  # features' + biases' share of mlp_out[t]
    for lc in codes:
        if lc.layer >= layer:
            continue
        x = cache[lc.read_hook][0, pos]
        act = lc.activate((lc.in_scale * x) @ lc.W_enc + lc.b_enc)
        for i in act.nonzero()[:, 0].tolist():
            v = torch.zeros_like(vecs[0])
            for t, dec in lc.decoders.items():
                if t < layer:
                    part = act[i] * dec[i]
                    v = v + part
                    written[t] = written[t] + part
            names.append(f"m{lc.layer}.f{i}@{pos}")
            vecs.append(v)
        bias = torch.zeros_like(vecs[0])
        if lc.b_dec is not None:
            bias = bias + lc.b_dec
        if lc.W_skip is not None:
            bias = bias + x @ lc.W_skip
        written[lc.layer] = written[lc.layer] + bias
        names.append(f"m{lc.layer}.bias@{pos}")
        vecs.append(bias)
    for t in range(layer):
        names.append(f"a{t}@{pos}")
        vecs.append(cache[f"blocks.{t}.hook_attn_out"][0, pos])
        if model.cfg.mlp is not None:
            names.append(f"m{t}.err@{pos}")
            vecs.append(cache[f"blocks.{t}.hook_mlp_out"][0, pos] - written[t])
    return names, torch.stack(vecs).detach()


def _project(model: Any, layer: int, comps: Tensor, scale: Tensor, W: Tensor, b: Tensor | None,
             pos: int, n_pos: int, head_norm: tuple[nn.Module, Tensor] | None = None) -> Tensor:
    """``[n+1 d_head]``: each component through the frozen norm and ``W`` (+ one bias row), then the frozen
    q/k norm (``head_norm`` = (the norm, its scale at this head and position [1])), rotated at ``pos``."""
    ln = model.blocks[layer].ln1
    out = frozen_norm(ln, comps, scale) @ W
    bias = torch.zeros(W.shape[-1], dtype=out.dtype)
    if isinstance(ln, LayerNorm) and ln.b is not None:
        bias = bias + ln.b @ W
    if b is not None:
        bias = bias + b
    out = torch.cat([out, bias[None]])
    if head_norm is not None:
        out = frozen_norm(head_norm[0], out, head_norm[1])
    if model.cfg.positional.kind == "rotary":
        rd = model.cfg.positional.rotary_dim or model.cfg.d_head
        base = model.cfg.positional.base_of(model.cfg.attention.is_local(layer))
        cos, sin = rotary_cos_sin(torch.arange(n_pos)[None], rd, base, out.dtype)
        out = apply_rotary(out[:, None, None, :], cos[:, pos:pos + 1], sin[:, pos:pos + 1])[:, 0, 0]
    return out


def qk_attribution(model: Any, tokens: Tensor, transcoders: CrossLayerTranscoder | Sequence[Transcoder],
                   layer: int, head: int, query_pos: int, key_pos: int) -> QKAttribution:
    """Decompose the attention score of ``head`` in ``layer`` from ``query_pos`` to ``key_pos``."""
    if tokens.dim() == 2:
        tokens = tokens[0]
    n_pos = int(tokens.shape[0])
    a = model.cfg.attention
    if not 0 <= layer < model.cfg.n_layers or not 0 <= head < a.n_heads:
        raise ConfigError(f"layer must be in [0, {model.cfg.n_layers}) and head in [0, {a.n_heads}), got "
                          f"{layer}, {head}")
    if not 0 <= key_pos <= query_pos < n_pos:
        raise ConfigError(f"need 0 <= key_pos <= query_pos < {n_pos} (causal attention), got {key_pos}, {query_pos}")
    if model.cfg.positional.kind == "shortformer":
        raise ConfigError("QK attribution does not support shortformer positions (they enter Q and K only)")
    if a.is_local(layer) and a.sliding_window is not None and query_pos - key_pos >= a.sliding_window:
        raise ConfigError(f"layer {layer} attends only to the {a.sliding_window} latest keys (sliding window): key_pos "
                          f"{key_pos} is masked for query_pos {query_pos} and has no score; need query_pos - key_pos "
                          f"< {a.sliding_window}")
    codes = layer_codes(model, transcoders)
    names = {"hook_embed", "hook_pos_embed", f"blocks.{layer}.attn.hook_attn_scores"}
    names |= {f"blocks.{t}.hook_attn_out" for t in range(layer)} | {lc.read_hook for lc in codes}
    if model.cfg.mlp is not None:
        names |= {f"blocks.{t}.hook_mlp_out" for t in range(layer)}
    ln = model.blocks[layer].ln1
    has_scale = isinstance(ln, (LayerNorm, RMSNorm))
    if has_scale:
        names.add(f"blocks.{layer}.ln1.hook_scale")
    if a.qk_norm:
        names |= {f"blocks.{layer}.attn.q_norm.hook_scale", f"blocks.{layer}.attn.k_norm.hook_scale"}
    names &= set(model.hook_names())
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None].long(), names=sorted(names))
        attn = model.blocks[layer].attn
        kv = head // (a.n_heads // a.kv_heads)
        sides = []
        b_q = None if attn.b_Q is None else attn.b_Q[head]
        b_k = None if attn.b_K is None else attn.b_K[kv]
        for side, pos, W, bias, idx in (("q", query_pos, attn.W_Q[head], b_q, head),
                                        ("k", key_pos, attn.W_K[kv], b_k, kv)):
            cn, cv = _components(model, cache, codes, layer, pos)
            scale = cache[f"blocks.{layer}.ln1.hook_scale"][0, pos] if has_scale else torch.ones(1)
            head_norm = None
            if a.qk_norm:  # frozen per head and position, like ln1 (module docstring)
                head_norm = (getattr(attn, f"{side}_norm"),
                             cache[f"blocks.{layer}.attn.{side}_norm.hook_scale"][0, pos, idx])
            sides.append((cn + ["bias"], _project(model, layer, cv, scale, W, bias, pos, n_pos, head_norm)))
        (qn, qv), (kn, kv_) = sides
        terms = (qv @ kv_.T) * attn.scale
        score = float(cache[f"blocks.{layer}.attn.hook_attn_scores"][0, head, query_pos, key_pos])
    return QKAttribution(layer, head, query_pos, key_pos, qn, kn, terms.detach(), score)


def main_attention_edge(model: Any, tokens: Tensor, graph: Any, pruned: Any) -> tuple[int, int, int, int] | None:
    """``(layer, head, query_pos, key_pos)`` for the strongest kept cross-position edge of a pruned graph: among
    the attention layers the edge can pass through (after its source's layer, up to its target's), the head
    attending most from the target's position to the source's. None if no kept edge crosses positions."""
    layer, pos = graph.node_layer_pos()
    tgt, src = pruned.edge_mask.nonzero(as_tuple=True)
    if tgt.numel() == 0:
        return None
    cross = pos[tgt] != pos[src]
    if not bool(cross.any()):
        return None
    t, s = tgt[cross], src[cross]
    best = int(graph.adjacency[t, s].abs().argmax())
    t_i, s_i = int(t[best]), int(s[best])
    lo = int(layer[s_i]) + 1
    hi = min(int(layer[t_i]), model.cfg.n_layers - 1)
    if int(layer[t_i]) < model.cfg.n_layers:  # a feature target reads the residual after its layer's attention
        hi = int(layer[t_i])
    q, k = int(pos[t_i]), int(pos[s_i])
    names = [f"blocks.{ly}.attn.hook_pattern" for ly in range(lo, hi + 1)]
    if not names:
        return None
    toks = tokens if tokens.dim() == 2 else tokens[None]
    with torch.no_grad():
        _, cache = model.run_with_cache(toks.long(), names=names)
    pats = torch.stack([cache[n][0, :, q, k] for n in names])  # [layers heads]
    flat = int(pats.argmax())
    return lo + flat // pats.shape[1], flat % pats.shape[1], q, k


__all__ = ["QKAttribution", "qk_attribution", "main_attention_edge"]
