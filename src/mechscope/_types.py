"""Dimension vocabulary and tensor aliases used in annotations across mechscope.

Axis names: ``batch pos d_model n_heads n_kv_heads d_head d_mlp d_vocab query_pos key_pos layer d_in d_sae``.
"""

from __future__ import annotations

from jaxtyping import Float, Int
from torch import Tensor

Tokens = Int[Tensor, "batch pos"]
Logits = Float[Tensor, "batch pos d_vocab"]
Resid = Float[Tensor, "batch pos d_model"]
Pattern = Float[Tensor, "batch n_heads query_pos key_pos"]
HeadActs = Float[Tensor, "batch pos n_heads d_head"]

__all__ = ["Tokens", "Logits", "Resid", "Pattern", "HeadActs", "Float", "Int", "Tensor"]
