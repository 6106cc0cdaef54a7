"""One transformer block: the residual stream written out literally.

Sequential:  resid_mid = resid_pre + attn(ln1(resid_pre));  resid_post = resid_mid + mlp(ln2(resid_mid))
Parallel (NeoX):  resid_post = resid_pre + attn(ln1(resid_pre)) + mlp(ln2(resid_pre))
Attention-only: resid_post = resid_pre + attn(ln1(resid_pre)).
With ``norm.post_sublayer`` (Gemma 2/3) each sublayer's output is normalised once more before it joins the
residual: resid_mid = resid_pre + ln1_post(attn(ln1(resid_pre))), likewise ``ln2_post`` after the MLP;
``hook_attn_out`` / ``hook_mlp_out`` see what is added to the residual (after the post-norm).

Per-head inputs (``hook_attn_in`` [batch pos n_heads d_model], ``hook_q_input``, ``hook_k_input``,
``hook_v_input``) are the residual *before* ``ln1``, one copy per head, materialised only when one of them
is hooked; each head's copy is then normalised on its own (so patching one head's query input changes only
that head). In that mode ``ln1``'s own hook points still report the shared residual's norm, but edits to
them do not reach the attention (edit the per-head inputs instead).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from mechscope.hooks.point import HookPoint
from mechscope.models.components.attention import Attention, KVCache
from mechscope.models.components.mlp import MLP
from mechscope.models.components.norm import make_norm
from mechscope.models.config import ModelConfig


class TransformerBlock(nn.Module):
    """See the module docstring."""

    hook_mlp_in: HookPoint
    hook_mlp_out: HookPoint
    hook_resid_mid: HookPoint
    ln2: nn.Module
    ln1_post: nn.Module
    ln2_post: nn.Module

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.parallel = cfg.parallel_attn_mlp
        self.ln1 = make_norm(cfg.d_model, cfg.norm)
        self.attn = Attention(cfg, layer)
        self.post_norm = cfg.norm.post_sublayer
        if self.post_norm:
            self.ln1_post = make_norm(cfg.d_model, cfg.norm)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_in = HookPoint()
        self.hook_q_input = HookPoint()
        self.hook_k_input = HookPoint()
        self.hook_v_input = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_post = HookPoint()
        self.mlp: MLP | None = None
        if cfg.mlp is not None:
            self.ln2 = make_norm(cfg.d_model, cfg.norm)
            self.mlp = MLP(cfg.d_model, cfg.mlp)
            if self.post_norm:
                self.ln2_post = make_norm(cfg.d_model, cfg.norm)
            self.hook_mlp_in = HookPoint()
            self.hook_mlp_out = HookPoint()
            if not self.parallel:
                self.hook_resid_mid = HookPoint()

    def _attn_inputs(self, resid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        split = (self.hook_attn_in.has_hooks or self.hook_q_input.has_hooks or self.hook_k_input.has_hooks
                 or self.hook_v_input.has_hooks)
        if not split:
            x = self.ln1(resid)
            return x, x, x
        if any(getattr(self.ln1, n).has_hooks for n in ("hook_scale", "hook_normalized") if hasattr(self.ln1, n)):
            self.ln1(resid)  # report the shared norm to its hooks (see module docstring)
        h, kv = self.attn.n_heads, self.attn.n_kv_heads
        base = self.hook_attn_in(resid.unsqueeze(2).expand(-1, -1, h, -1).clone())
        q_in = self.hook_q_input(base)
        kv_base = base if kv == h else base[:, :, :: h // kv]
        k_in = self.hook_k_input(kv_base)
        v_in = self.hook_v_input(kv_base)
        n: Callable[[Tensor], Tensor] = self.ln1.normalize  # type: ignore[assignment]
        return n(q_in), n(k_in), n(v_in)

    def forward(self, resid: Tensor, *, rotary: tuple[Tensor, Tensor] | None = None, mask: Tensor | None = None,
                cache: KVCache | None = None, qk_pos: Tensor | None = None) -> Tensor:
        """[batch pos d_model] -> [batch pos d_model].

        A sublayer output nobody hooks is a fresh tensor only this block holds, so the residual is added
        into it in place (``out.add_(resid)``: the same sum, one allocation less).
        """
        resid = self.hook_resid_pre(resid)
        q_in, k_in, v_in = self._attn_inputs(resid)
        attn_out = self.attn(q_in, k_in, v_in, rotary=rotary, mask=mask, cache=cache, qk_pos=qk_pos)
        if self.post_norm:
            attn_out = self.ln1_post(attn_out)
        with_attn = _add_residual(resid, attn_out, self.hook_attn_out)
        if self.mlp is None:
            return self.hook_resid_post(with_attn)
        if self.parallel:
            mlp_out = self._mlp(self.hook_mlp_in(resid))
            return self.hook_resid_post(_add_residual(with_attn, mlp_out, self.hook_mlp_out))
        mid = self.hook_resid_mid(with_attn)
        mlp_out = self._mlp(self.hook_mlp_in(mid))
        return self.hook_resid_post(_add_residual(mid, mlp_out, self.hook_mlp_out))

    def _mlp(self, x: Tensor) -> Tensor:
        """The MLP sublayer's contribution: mlp(ln2(x)), then ``ln2_post`` when the config has post-norms."""
        assert self.mlp is not None
        out = self.mlp(self.ln2(x))
        return self.ln2_post(out) if self.post_norm else out


def _add_residual(resid: Tensor, out: Tensor, hook: HookPoint) -> Tensor:
    """resid + hook(out); in place into ``out`` when it is unhooked (nobody else holds it)."""
    if hook.has_hooks:
        return resid + hook(out)
    return out.add_(resid)
