"""A hand-built two-layer attention-only model with a previous-token head (0.0) and an induction head (1.0).

Residual stream = [token one-hot (V) | position one-hot (P) | previous-token one-hot (V)]. Head 0.0 attends
from position i to i−1 (positional QK) and writes the attended token into the previous-token slot; head
1.0's query is the current token and its key reads the previous-token slot, so it attends to the token
after an earlier copy of the current one, whose token its OV copies to the logits. Heads 0.1 and 1.1 have
zero weights (uniform attention).
"""

from __future__ import annotations

import math

import torch

from mechscope.models.config import AttentionConfig, ModelConfig, NormConfig, PositionalConfig
from mechscope.models.transformer import HookedTransformer


def handbuilt_induction_model(d_vocab: int = 12, n_ctx: int = 24, sharpness: float = 40.0) -> HookedTransformer:
    """The model described in the module docstring; ``sharpness`` is the attention logit of a match."""
    v, p = d_vocab, n_ctx
    d_model, d_head = 2 * v + p, max(v, p)
    cfg = ModelConfig(d_model=d_model, n_layers=2, d_vocab=v, n_ctx=p, attention=AttentionConfig(n_heads=2, d_head=d_head),
                      mlp=None, norm=NormConfig(kind="none"), positional=PositionalConfig(kind="learned"),
                      architecture="toy")
    model = HookedTransformer(cfg, seed=0)
    tok, pos, prev = torch.arange(v), v + torch.arange(p), v + p + torch.arange(v)
    s = sharpness * math.sqrt(d_head)
    with torch.no_grad():
        for prm in model.parameters():
            prm.zero_()
        model.embed.W_E[tok, tok] = 1.0
        model.pos_embed.W_pos[torch.arange(p), pos] = 1.0
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        a0.W_Q[0, pos, torch.arange(p)] = s  # query position i -> e_i
        a0.W_K[0, pos[:-1], torch.arange(1, p)] = 1.0  # key position j -> e_{j+1}
        a0.W_V[0, tok, torch.arange(v)] = 1.0
        a0.W_O[0, torch.arange(v), prev] = 1.0
        a1.W_Q[0, tok, torch.arange(v)] = s  # query token t -> e_t
        a1.W_K[0, prev, torch.arange(v)] = 1.0  # key whose previous token is t -> e_t
        a1.W_V[0, tok, torch.arange(v)] = 1.0
        a1.W_O[0, torch.arange(v), tok] = 1.0
        model.unembed.W_U[tok, tok] = 1.0
    return model.eval()
