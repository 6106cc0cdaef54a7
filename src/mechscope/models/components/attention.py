"""Causal self-attention with TransformerLens hook points, grouped-query heads and rotary positions.

Weights (TransformerLens layout): ``W_Q`` [n_heads d_model d_head], ``W_K``/``W_V`` [n_kv_heads d_model
d_head], ``W_O`` [n_heads d_head d_model], biases ``b_Q`` [n_heads d_head], ``b_K``/``b_V`` [n_kv_heads
d_head], ``b_O`` [d_model].

Cost follows the hooks: the fused ``scaled_dot_product_attention`` kernel runs unless someone hooks
``hook_attn_scores`` or ``hook_pattern``; ``hook_result`` (per-head outputs [batch pos n_heads d_model])
is computed only when hooked. Inputs are either one tensor [batch pos d_model] shared by Q, K and V, or
per-head inputs [batch pos heads d_model] (when a block's ``hook_q_input``-style points are hooked).

Variants are config values: ``attention.qk_norm`` adds ``q_norm`` / ``k_norm`` (RMSNorm over ``d_head``, with
their own ``hook_scale`` / ``hook_normalized``) between ``hook_q``/``hook_k`` and the rotary positions;
a layer that ``attention.is_local`` masks keys more than ``sliding_window - 1`` positions back.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mechscope.hooks.point import HookPoint
from mechscope.models.components.fused import FusedWeight, cat_heads
from mechscope.models.components.norm import RMSNorm
from mechscope.models.components.rotary import apply_rotary
from mechscope.models.config import ModelConfig, NormConfig


class KVCache:
    """Keys/values of earlier positions for incremental decoding, plus the key padding mask so far.

    ``keys[l]``/``values[l]``: [batch n_kv_heads past d_head] (keys after rotary); ``mask``: [batch past]
    bool, True where the key is a real token.
    """

    def __init__(self, n_layers: int) -> None:
        self.keys: list[Tensor | None] = [None] * n_layers
        self.values: list[Tensor | None] = [None] * n_layers
        self.mask: Tensor | None = None

    @property
    def length(self) -> int:
        """Number of cached positions."""
        return 0 if self.mask is None else int(self.mask.shape[1])

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append this step's k/v [batch kv pos d_head] for ``layer``; return the full k/v."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)  # type: ignore[list-item]
            v = torch.cat([self.values[layer], v], dim=2)  # type: ignore[list-item]
        else:  # own copies: k/v may be views into a larger projection buffer (which holds Q too)
            k, v = k.contiguous(), v.contiguous()
        self.keys[layer], self.values[layer] = k, v
        return k, v


class Attention(nn.Module):
    """Multi-head / grouped-query causal attention; see the module docstring."""

    hook_q: HookPoint
    hook_k: HookPoint
    hook_v: HookPoint
    hook_rot_q: HookPoint
    hook_rot_k: HookPoint
    hook_attn_scores: HookPoint
    hook_pattern: HookPoint
    hook_z: HookPoint
    hook_result: HookPoint

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        a = cfg.attention
        h, kv, d, e = a.n_heads, a.kv_heads, cfg.d_model, a.d_head
        self.layer, self.n_heads, self.n_kv_heads, self.d_head = layer, h, kv, e
        self.scale = a.attn_scale
        self.W_Q = nn.Parameter(torch.empty(h, d, e))
        self.W_K = nn.Parameter(torch.empty(kv, d, e))
        self.W_V = nn.Parameter(torch.empty(kv, d, e))
        self.W_O = nn.Parameter(torch.empty(h, e, d))
        self.b_Q = nn.Parameter(torch.zeros(h, e)) if a.qkv_bias else None
        self.b_K = nn.Parameter(torch.zeros(kv, e)) if a.qkv_bias else None
        self.b_V = nn.Parameter(torch.zeros(kv, e)) if a.qkv_bias else None
        self.b_O = nn.Parameter(torch.zeros(d)) if a.out_bias else None
        self.is_rotary = cfg.positional.kind == "rotary"
        self.window = a.sliding_window if a.is_local(layer) else None
        qk_cfg = NormConfig(kind="rmsnorm", eps=cfg.norm.eps)
        self.q_norm = RMSNorm(e, qk_cfg) if a.qk_norm else None
        self.k_norm = RMSNorm(e, qk_cfg) if a.qk_norm else None
        self._fused_qkv = FusedWeight(cat_heads)
        names = ["q", "k", "v", "attn_scores", "pattern", "z", "result"] + (["rot_q", "rot_k"] if self.is_rotary else [])
        for name in names:  # only hook points that exist for this architecture
            setattr(self, f"hook_{name}", HookPoint())

    # -- projections ------------------------------------------------------------------------------
    def _project(self, x_q: Tensor, x_k: Tensor, x_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q [b p h e], k/v [b p kv e] from shared [b p d] or per-head [b p heads d] inputs."""
        h, kv = self.n_heads, self.n_kv_heads
        if x_q.dim() == 3 and x_q is x_k and x_k is x_v:
            qkv = self._qkv(x_q)
            return qkv[:, :, :h], qkv[:, :, h:h + kv], qkv[:, :, h + kv:]
        q = torch.einsum("bphd,hde->bphe", _per_head(x_q, h), self.W_Q)
        k = torch.einsum("bphd,hde->bphe", _per_head(x_k, kv), self.W_K)
        v = torch.einsum("bphd,hde->bphe", _per_head(x_v, kv), self.W_V)
        if self.b_Q is not None and self.b_K is not None and self.b_V is not None:
            q, k, v = q + self.b_Q, k + self.b_K, v + self.b_V
        return q, k, v

    def _qkv(self, x: Tensor) -> Tensor:
        """[b p (n_heads + 2 n_kv_heads) d_head]: Q, K and V heads from one matmul of a shared input."""
        b, p = x.shape[:2]
        w = self._fused_qkv.get((self.W_Q, self.W_K, self.W_V))
        if self.b_Q is not None and self.b_K is not None and self.b_V is not None:
            bias = torch.cat([self.b_Q.reshape(-1), self.b_K.reshape(-1), self.b_V.reshape(-1)])
            qkv = nn.functional.linear(x, w.t(), bias)  # bias fused (addmm)
        else:
            qkv = x @ w
        return qkv.view(b, p, self.n_heads + 2 * self.n_kv_heads, self.d_head)

    def _qkv_hooked(self) -> bool:
        hooks = (self.hook_q, self.hook_k, self.hook_v) + ((self.hook_rot_q, self.hook_rot_k) if self.is_rotary else ())
        return any(hk.has_hooks for hk in hooks)

    def _heads_fast(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor, Tensor]:
        """qt [b h p e], kt/vt [b kv p e] (transposed views) with no q/k/v hooks: one matmul, Q and K
        rotated together into one buffer, V a view of the matmul output."""
        h, kv = self.n_heads, self.n_kv_heads
        qkv = self._qkv(x)
        vt = qkv[:, :, h + kv:].transpose(1, 2)
        if not (self.is_rotary and rotary is not None):
            return qkv[:, :, :h].transpose(1, 2), qkv[:, :, h:h + kv].transpose(1, 2), vt
        qk = apply_rotary(qkv[:, :, :h + kv], rotary[0], rotary[1]).transpose(1, 2)
        return qk[:, :h], qk[:, h:], vt

    def forward(self, x_q: Tensor, x_k: Tensor, x_v: Tensor, *, rotary: tuple[Tensor, Tensor] | None = None,
                mask: Tensor | None = None, cache: KVCache | None = None, qk_pos: Tensor | None = None) -> Tensor:
        """Attention output [batch pos d_model] (a new tensor the caller may modify in place).

        Args:
            mask: bool [batch 1 query_pos key_pos], True = may attend; None = plain causal.
            cache: a ``KVCache`` to read earlier keys/values from and append to.
            qk_pos: shortformer positions [batch pos d_model] added to the query and key inputs (not V):
                ``q = (x_q + qk_pos) W_Q + b_Q``, computed as ``x_q W_Q + b_Q + qk_pos W_Q``.
        """
        if (x_q.dim() == 3 and x_q is x_k and x_k is x_v and qk_pos is None and self.q_norm is None
                and not self._qkv_hooked()):
            qt, kt, vt = self._heads_fast(x_q, rotary)
        else:
            q, k, v = self._project(x_q, x_k, x_v)
            if qk_pos is not None:
                q = q + torch.einsum("bpd,hde->bphe", qk_pos, self.W_Q)
                k = k + torch.einsum("bpd,hde->bphe", qk_pos, self.W_K)
            q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
            if self.q_norm is not None and self.k_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            if self.is_rotary and rotary is not None:
                cos, sin = rotary
                q = self.hook_rot_q(apply_rotary(q, cos, sin))
                k = self.hook_rot_k(apply_rotary(k, cos, sin))
            qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cache is not None:
            kt, vt = cache.update(self.layer, kt, vt)
        if mask is None and kt.shape[2] != qt.shape[2]:
            mask = causal_mask(qt.shape[2], kt.shape[2], qt.device)
        if self.window is not None and kt.shape[2] > self.window:
            near = window_mask(qt.shape[2], kt.shape[2], self.window, qt.device)
            mask = near & (mask if mask is not None else causal_mask(qt.shape[2], kt.shape[2], qt.device))
        if self.hook_attn_scores.has_hooks or self.hook_pattern.has_hooks:
            z = self._explicit(qt, kt, vt, mask)
        else:
            z = _sdpa(qt, kt, vt, mask, self.scale, self.n_kv_heads != self.n_heads)
        z = self.hook_z(z.transpose(1, 2))  # [b p h e]
        return self._output(z)

    def _explicit(self, qt: Tensor, kt: Tensor, vt: Tensor, mask: Tensor | None) -> Tensor:
        """Softmax attention with the scores and pattern materialised (and hookable)."""
        rep = self.n_heads // self.n_kv_heads
        if rep > 1:
            kt, vt = kt.repeat_interleave(rep, dim=1), vt.repeat_interleave(rep, dim=1)
        scores = (qt @ kt.transpose(-1, -2)) * self.scale
        if mask is None:
            mask = causal_mask(qt.shape[2], kt.shape[2], qt.device)
        scores = scores.masked_fill(~mask, float("-inf"))
        scores = self.hook_attn_scores(scores)
        pattern = self.hook_pattern(torch.softmax(scores, dim=-1))
        return pattern @ vt

    def _output(self, z: Tensor) -> Tensor:
        b, p, h, e = z.shape
        if self.hook_result.has_hooks:
            result = self.hook_result(torch.einsum("bphe,hed->bphd", z, self.W_O))
            out = result.sum(dim=2)
            return out + self.b_O if self.b_O is not None else out
        w_o = self.W_O.reshape(h * e, -1)
        if self.b_O is not None:
            return nn.functional.linear(z.reshape(b, p, h * e), w_o.t(), self.b_O)
        return z.reshape(b, p, h * e) @ w_o


def _sdpa(qt: Tensor, kt: Tensor, vt: Tensor, mask: Tensor | None, scale: float, gqa: bool) -> Tensor:
    """The fused attention kernel, [batch heads pos d_head] in and out.

    Under CPU autocast with gradients on (bf16 training), it runs in float32: torch's CPU flash-attention
    backward is slower in bfloat16 than in float32 (``benchmarks/train_step.py``, two-layer model, ctx 256,
    2 threads: per update 0.274 s with this vs 0.301 s with bf16 attention at d_head 32, 0.217 vs 0.277 s at
    d_head 16), while the matmuls around it keep autocast's bf16 speed.
    """
    if qt.device.type == "cpu" and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return nn.functional.scaled_dot_product_attention(
                qt.float(), kt.float(), vt.float(), attn_mask=mask, is_causal=mask is None, scale=scale,
                enable_gqa=gqa)
    return nn.functional.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, is_causal=mask is None,
                                                      scale=scale, enable_gqa=gqa)


def _per_head(x: Tensor, n: int) -> Tensor:
    """[b p d] -> [b p n d] (a view), or pass through per-head inputs."""
    return x if x.dim() == 4 else x.unsqueeze(2).expand(-1, -1, n, -1)


def causal_mask(q_len: int, k_len: int, device: torch.device) -> Tensor:
    """bool [q_len k_len]: query i (the last q_len of k_len positions) may attend keys j <= its position."""
    offset = k_len - q_len
    qi = torch.arange(q_len, device=device)[:, None] + offset
    kj = torch.arange(k_len, device=device)[None, :]
    return kj <= qi


def window_mask(q_len: int, k_len: int, window: int, device: torch.device) -> Tensor:
    """bool [q_len k_len]: key j is among the ``window`` latest positions of query i (i - j < window; the
    queries are the last q_len of k_len positions). Combine with the causal mask."""
    qi = torch.arange(q_len, device=device)[:, None] + (k_len - q_len)
    kj = torch.arange(k_len, device=device)[None, :]
    return qi - kj < window
