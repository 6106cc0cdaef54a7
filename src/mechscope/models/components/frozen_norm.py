"""A norm with its scale frozen at its value in a real forward: a linear map, so sums pass through it.

``norm(Σ_i x_i) = Σ_i frozen_norm(norm, x_i, scale) + bias`` exactly when ``scale`` is the norm's scale for
``Σ_i x_i`` (``hook_scale``). Analyses that split a normalised sum into pieces use it (the house convention
of ``cache.analysis.apply_ln_to_stack`` and ``attribution.qk``); ``head_contributions`` uses it for the
post-attention norm of Gemma 2/3 (``norm.post_sublayer``), where ``hook_attn_out = ln1_post(Σ_h result_h +
b_O)`` instead of the plain sum of the heads.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from mechscope.models.components.norm import LayerNorm, RMSNorm


def norm_scale(norm: nn.Module, x: Tensor) -> Tensor:
    """The scale ``norm`` divides ``x`` [..., d] by (what its ``hook_scale`` reports), [..., 1]; ones for no norm."""
    if isinstance(norm, LayerNorm):
        x = x - x.mean(-1, keepdim=True)
    elif not isinstance(norm, RMSNorm):
        return x.new_ones((*x.shape[:-1], 1))
    return (x.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()


def frozen_norm(norm: nn.Module, x: Tensor, scale: Tensor) -> Tensor:
    """``x``'s share [..., d] of ``norm``'s output at a frozen ``scale`` (broadcast against ``x``): centred
    (LayerNorm), divided by ``scale``, times the weight. The bias (LayerNorm) is no one's share: add it once."""
    if isinstance(norm, LayerNorm):
        x = x - x.mean(-1, keepdim=True)
    elif not isinstance(norm, RMSNorm):
        return x
    return x / scale.to(x.dtype) * norm.w.detach().to(x.dtype)


def head_contributions(model: Any, layer: int, result: Tensor, scale: Tensor | None = None) -> Tensor:
    """What each head of ``layer`` adds to the residual stream, [... heads d_model] from its result (``hook_result``
    [... heads d_model]).

    Without ``norm.post_sublayer`` that is the result itself (the heads sum to ``hook_attn_out - b_O``). With it,
    each result passes through ``ln1_post`` at the scale of the real forward: ``scale`` [... 1]
    (``blocks.{layer}.ln1_post.hook_scale``), or, when None, recomputed from ``Σ_h result + b_O`` (the
    sublayer's output before the norm). The pieces then sum to ``hook_attn_out`` minus ``ln1_post``'s share of
    ``b_O`` and its bias (Gemma has neither: the heads alone sum to ``hook_attn_out``).
    """
    if not model.cfg.norm.post_sublayer:
        return result
    post = model.blocks[layer].ln1_post
    if scale is None:
        pre = result.sum(-2)
        b_o = model.blocks[layer].attn.b_O
        if b_o is not None:
            pre = pre + b_o.detach().to(pre.dtype)
        scale = norm_scale(post, pre)
    return frozen_norm(post, result, scale.unsqueeze(-2))


__all__ = ["frozen_norm", "head_contributions", "norm_scale"]
