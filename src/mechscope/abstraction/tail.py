"""``ResidualTail``: a transformer resumed from one layer's residual stream, for cheap interchange training.

DAS on a language model trains a rotation by back-propagating through the network after the intervened
activation, for every batch. When the intervention is on ``blocks.L.hook_resid_post`` at positions
``start..`` of prompts that all have the same length, nothing before block L+1 and nothing before position
``start`` changes: this module caches, once, the residual after block L at positions ``start..`` and the
keys/values of positions ``< start`` for blocks L+1.., and its forward runs only blocks L+1.. on positions
``start..`` (reading the cached keys/values), then the final norm and unembedding at the last position.

Its input is a tensor of *prompt ids* (rows of the token matrix), so interchange data is just pairs of ids
(``InterchangeData(base=ids, sources=[ids])``); its hook point ``hook_resid`` carries the cached residual
``[batch pos-start d_model]`` (swap positions are relative to ``start``: 0 = ``start``, -1 = last). With
``candidates`` [n c] it returns the logits of each prompt's candidate tokens ``[batch c]`` (so labels index
the candidates), else the full vocabulary ``[batch vocab]``. Its ``parameters()`` are the wrapped model's,
so DAS freezes them while it trains.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from mechscope.errors import ConfigError, ShapeError
from mechscope.hooks.module import HookedModule
from mechscope.hooks.point import HookPoint
from mechscope.models.components.attention import KVCache


class ResidualTail(HookedModule):
    """Blocks ``layer+1..`` of ``model`` on cached residuals of a fixed prompt set (see module docstring)."""

    model: Any

    def __init__(self, model: Any, tokens: Int[Tensor, "n pos"], layer: int, start: int,
                 candidates: Int[Tensor, "n c"] | None = None) -> None:
        super().__init__()
        n_layers = int(model.cfg.n_layers)
        if not 0 <= layer < n_layers:
            raise ConfigError(f"layer must be in [0, {n_layers - 1}], got {layer}")
        if not 0 <= start < tokens.shape[1]:
            raise ConfigError(f"start position must be in [0, {tokens.shape[1] - 1}], got {start}")
        if candidates is not None and candidates.shape[0] != tokens.shape[0]:
            raise ShapeError(f"candidates has {candidates.shape[0]} rows, tokens {tokens.shape[0]}")
        object.__setattr__(self, "model", model)  # not a submodule: its hook points keep their own names
        self.layer, self.start, self.n_layers = layer, start, n_layers
        self.hook_resid = HookPoint()
        with torch.no_grad():
            self.resid = model(tokens, stop_at_layer=layer + 1)[:, start:].detach()
            cache = KVCache(n_layers)
            if start > 0:
                model(tokens[:, :start], past_kv=cache)
        later = range(layer + 1, n_layers)
        self.keys: dict[int, Tensor] = {lay: cast(Tensor, cache.keys[lay]) for lay in later if start > 0}
        self.values: dict[int, Tensor] = {lay: cast(Tensor, cache.values[lay]) for lay in later if start > 0}
        self.candidates = candidates
        self.setup()

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The wrapped model's parameters (so callers that freeze them freeze the model)."""
        return cast(Iterator[nn.Parameter], self.model.parameters(recurse))

    def forward(self, ids: Int[Tensor, " batch"]) -> Float[Tensor, "batch out"]:
        x = self.hook_resid(self.resid[ids])
        cache: KVCache | None = None
        if self.keys:
            cache = KVCache(self.n_layers)
            for lay, k in self.keys.items():
                cache.keys[lay], cache.values[lay] = k[ids], self.values[lay][ids]
            cache.mask = torch.ones(len(ids), self.start, dtype=torch.bool)
        m = self.model
        x = m.run_blocks(x, self.layer + 1, past_kv=cache)
        logits = m.unembed(m.ln_final(x[:, -1]))
        return logits.gather(1, self.candidates[ids]) if self.candidates is not None else logits


__all__ = ["ResidualTail"]
