"""``HookedTransformer``: assembly of components into a decoder-only transformer with named hook points.

Axis names: ``batch pos d_model n_heads d_head d_mlp d_vocab``. Every activation has a TransformerLens
name (``blocks.3.attn.hook_z``...; see ``hooks/names.py``). The class only assembles and runs; loading
(``models/loading.py``), weight processing (``models/weights.py``), generation (``models/generate.py``)
and tokenisation (``tokens.py``) live elsewhere; ``models/habits.py`` adds TransformerLens's method names
(``to_tokens``, ``generate``, ``from_pretrained``...) as thin delegations to them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mechscope.errors import ConfigError, ModelFileError, TokenError, shape_error
from mechscope.hooks.module import HookedModule
from mechscope.hooks.point import HookPoint
from mechscope.models.components.attention import KVCache, causal_mask
from mechscope.models.components.block import TransformerBlock
from mechscope.models.components.embed import Embed, PosEmbed, Unembed
from mechscope.models.components.norm import make_norm
from mechscope.models.components.rotary import rotary_cos_sin
from mechscope.models.config import ModelConfig
from mechscope.models.habits import TransformerLensMethods


def init_std(d_model: int) -> float:
    """Standard deviation of every initial weight matrix: 0.8 / sqrt(d_model) (TransformerLens's default)."""
    return 0.8 / math.sqrt(d_model)


class HookedTransformer(TransformerLensMethods, HookedModule):
    """A decoder-only transformer whose every activation is a named hook point.

    Example:
        >>> from mechscope.models.config import ModelConfig, AttentionConfig
        >>> cfg = ModelConfig(d_model=16, n_layers=2, d_vocab=20, n_ctx=8,
        ...                   attention=AttentionConfig(n_heads=2, d_head=8))
        >>> model = HookedTransformer(cfg, seed=0)
        >>> model(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 20])
    """

    def __init__(self, cfg: ModelConfig, *, seed: int | None = None, tokenizer: Any = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.embed = Embed(cfg.d_vocab, cfg.d_model)
        self.hook_tokens = HookPoint()
        self.hook_embed = HookPoint()
        if cfg.positional.kind in ("learned", "shortformer"):
            self.pos_embed = PosEmbed(cfg.n_ctx, cfg.d_model)
            self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList([TransformerBlock(cfg, layer) for layer in range(cfg.n_layers)])
        self.ln_final = make_norm(cfg.d_model, cfg.norm)
        self.unembed = Unembed(cfg.d_model, cfg.vocab_out, cfg.unembed_bias)
        self.init_weights(seed)
        self.setup()

    # -- init -------------------------------------------------------------------------------------
    def init_weights(self, seed: int | None = None) -> None:
        """Normal(0, 0.8/sqrt(d_model)) weight matrices (TransformerLens's default), zero biases, unit norms."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = init_std(self.cfg.d_model)
        with torch.no_grad():
            for name, p in self.named_parameters():
                leaf = name.rsplit(".", 1)[-1]
                if leaf.startswith("W_"):
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
                elif leaf == "w":
                    p.fill_(1.0)
                else:
                    p.zero_()

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, tokens: Tensor, *, attention_mask: Tensor | None = None, past_kv: KVCache | None = None,
                stop_at_layer: int | None = None) -> Tensor:
        """Logits [batch pos d_vocab_out], or the residual stream [batch pos d_model] before block
        ``stop_at_layer`` when that is given (0 = the embeddings).

        Args:
            tokens: int ids [batch pos] (a 1-D tensor is treated as one sequence).
            attention_mask: [batch pos] 1 for real tokens, 0 for padding (left or right); positions count
                real tokens only, so left-padded batches give the same numbers as unpadded sequences.
            past_kv: a ``KVCache`` for incremental decoding (filled in place).
        """
        tokens = self._check_tokens(tokens, past_kv)
        tokens = self.hook_tokens(tokens)
        mask, positions = self._mask_and_positions(tokens, attention_mask, past_kv)
        x = self.embed(tokens)
        if self.cfg.embed_scale != 1.0:
            x = x * torch.tensor(self.cfg.embed_scale, dtype=x.dtype)  # rounded to x's dtype, as transformers does
        x = self.hook_embed(x)
        if self.cfg.positional.kind == "learned":
            x = x + self.hook_pos_embed(self.pos_embed(positions))
        n_run = self.cfg.n_layers if stop_at_layer is None else self._check_stop(stop_at_layer)
        x = self._run_blocks(x, 0, n_run, positions=positions, mask=mask, past_kv=past_kv)
        if stop_at_layer is not None:
            return x
        return self.unembed(self.ln_final(x))

    def run_blocks(self, resid: Tensor, start_layer: int, stop_layer: int | None = None, *,
                   past_kv: KVCache | None = None) -> Tensor:
        """Run blocks ``start_layer .. stop_layer-1`` on a residual stream [batch pos d_model].

        Used to resume a forward pass from a (patched) residual without re-running earlier layers. With
        ``past_kv`` holding earlier positions' keys/values for layers ``start_layer..``, ``resid`` holds
        only the later positions, which continue the cached ones (plain causal attention, no padding).
        """
        stop = self.cfg.n_layers if stop_layer is None else self._check_stop(stop_layer)
        if not 0 <= start_layer <= stop:
            raise ConfigError(f"start_layer must be in [0, {stop}], got {start_layer}")
        b, p = resid.shape[:2]
        past = past_kv.keys[start_layer] if past_kv is not None and start_layer < stop else None
        offset = 0 if past is None else int(past.shape[2])
        positions = torch.arange(offset, offset + p, device=resid.device).expand(b, p)
        return self._run_blocks(resid, start_layer, stop, positions=positions, mask=None, past_kv=past_kv)

    def _run_blocks(self, x: Tensor, start: int, stop: int, *, positions: Tensor, mask: Tensor | None,
                    past_kv: KVCache | None) -> Tensor:
        rotary = rotary_local = qk_pos = None
        pos_cfg, attn_cfg = self.cfg.positional, self.cfg.attention
        if pos_cfg.kind == "rotary":
            rd = pos_cfg.rotary_dim or self.cfg.d_head
            rotary = rotary_local = rotary_cos_sin(positions, rd, pos_cfg.rotary_base, x.dtype)
            if pos_cfg.local_rotary_base is not None and attn_cfg.sliding_window is not None:
                rotary_local = rotary_cos_sin(positions, rd, pos_cfg.local_rotary_base, x.dtype)
        elif pos_cfg.kind == "shortformer" and start < stop:
            qk_pos = self.hook_pos_embed(self.pos_embed(positions))  # into Q/K inputs only, never the residual
        for layer in range(start, stop):
            rot = rotary_local if attn_cfg.is_local(layer) else rotary
            x = self.blocks[layer](x, rotary=rot, mask=mask, cache=past_kv, qk_pos=qk_pos)
        return x

    def _check_stop(self, layer: int) -> int:
        if not 0 <= layer <= self.cfg.n_layers:
            raise ConfigError(f"stop_at_layer must be in [0, {self.cfg.n_layers}], got {layer}")
        return layer

    def _check_tokens(self, tokens: Tensor, past_kv: KVCache | None) -> Tensor:
        if not isinstance(tokens, Tensor):
            raise TokenError(f"tokens must be an int tensor [batch pos], got {type(tokens).__name__}; "
                             "use model.tokenizer.to_tokens(text) for strings")
        if tokens.dim() == 1:
            tokens = tokens.unsqueeze(0)
        if tokens.dim() != 2:
            raise shape_error("tokens", "[batch pos]", tokens.shape)
        if tokens.dtype not in (torch.int64, torch.int32):
            raise TokenError(f"tokens must be int64/int32 ids, got dtype {tokens.dtype}")
        if tokens.numel():
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self.cfg.d_vocab:
                raise TokenError(f"token ids must be in [0, {self.cfg.d_vocab}) for this model; got min {lo}, max {hi}")
        total = tokens.shape[1] + (past_kv.length if past_kv is not None else 0)
        if total > self.cfg.n_ctx:
            raise TokenError(f"sequence length {total} exceeds the model's n_ctx={self.cfg.n_ctx}; "
                             "truncate or split the input")
        return tokens.long()

    def _mask_and_positions(self, tokens: Tensor, attention_mask: Tensor | None,
                            past_kv: KVCache | None) -> tuple[Tensor | None, Tensor]:
        """Bool attention mask [batch 1 q k] (None = plain causal) and positions [batch pos]."""
        b, p = tokens.shape
        past = past_kv.length if past_kv is not None else 0
        if attention_mask is None and (past_kv is None or past_kv.mask is None or bool(past_kv.mask.all())):
            if past_kv is not None:
                past_kv.mask = torch.ones(b, past + p, dtype=torch.bool, device=tokens.device)
            pos = torch.arange(past, past + p, device=tokens.device).expand(b, p)
            return None, pos
        if attention_mask is None:
            attention_mask = torch.ones(b, p, dtype=torch.bool, device=tokens.device)
        if attention_mask.shape != tokens.shape:
            raise shape_error("attention_mask", tuple(tokens.shape), attention_mask.shape)
        new = attention_mask.bool()
        full = new if past_kv is None or past_kv.mask is None else torch.cat([past_kv.mask, new], dim=1)
        if past_kv is not None:
            past_kv.mask = full
        positions = (full.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
        causal = causal_mask(p, full.shape[1], tokens.device)  # [p k]: query i sits at position past + i
        allowed = causal[None] & full[:, None, :]
        allowed[:, torch.arange(p), torch.arange(p) + past] = True  # a padding query still sees itself
        return allowed[:, None], positions

    def n_params(self) -> int:
        """Number of distinct parameters: a ``W_U`` that is exactly ``W_E``ᵀ (a tied embedding, stored
        untied here) is counted once, so the figure matches the source model's."""
        total = sum(p.numel() for p in self.parameters())
        if self.W_U.shape == self.W_E.T.shape and torch.equal(self.W_U, self.W_E.T):
            total -= self.W_U.numel()
        return total

    # -- weights, TransformerLens-style stacked views ----------------------------------------------
    def _stack(self, path: str) -> Tensor:
        def get(block: nn.Module) -> Tensor:
            obj: Any = block
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj

        return torch.stack([get(b) for b in self.blocks])

    @property
    def W_E(self) -> Tensor:
        """[d_vocab d_model]"""
        return self.embed.W_E

    @property
    def W_U(self) -> Tensor:
        """[d_model d_vocab_out]"""
        return self.unembed.W_U

    @property
    def W_pos(self) -> Tensor:
        """[n_ctx d_model]"""
        return self.pos_embed.W_pos

    @property
    def W_Q(self) -> Tensor:
        """[n_layers n_heads d_model d_head]"""
        return self._stack("attn.W_Q")

    @property
    def W_K(self) -> Tensor:
        """[n_layers n_kv_heads d_model d_head]"""
        return self._stack("attn.W_K")

    @property
    def W_V(self) -> Tensor:
        """[n_layers n_kv_heads d_model d_head]"""
        return self._stack("attn.W_V")

    @property
    def W_O(self) -> Tensor:
        """[n_layers n_heads d_head d_model]"""
        return self._stack("attn.W_O")

    @property
    def W_in(self) -> Tensor:
        """[n_layers d_model d_mlp]"""
        return self._stack("mlp.W_in")

    @property
    def W_out(self) -> Tensor:
        """[n_layers d_mlp d_model]"""
        return self._stack("mlp.W_out")

    # -- persistence ------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (+ the tokenizer's files if it can save itself).

        The directory is built under a hidden temporary name and published by one rename, so a kill
        never leaves new weights beside an old config.
        """
        from safetensors.torch import save_file

        from mechscope.io_safety import write_dir

        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}

        def write(d: Path) -> None:
            save_file(state, str(d / "model.safetensors"), metadata={"format": "mechscope"})
            (d / "config.json").write_text(self.cfg.to_json())
            if self.tokenizer is not None and hasattr(self.tokenizer, "save"):
                self.tokenizer.save(d)

        owned = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"}
        return write_dir(directory, write, owned, "a model")

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> HookedTransformer:
        """Inverse of ``save``; a missing or corrupted file raises ``ModelFileError``."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from mechscope.io_safety import recover_dir

        d = Path(directory)
        recover_dir(d)  # a save killed between its two renames left the old directory aside
        cfg_path, w_path = d / "config.json", d / "model.safetensors"
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise ModelFileError(f"{p} is missing: a saved mechscope model directory holds config.json "
                                     "and model.safetensors (written by model.save(dir))")
        try:
            cfg = ModelConfig.from_dict(json.loads(cfg_path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelFileError(f"{cfg_path} is not valid JSON: {e}") from e
        try:
            state = load_file(str(w_path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelFileError(f"{w_path} is not a readable safetensors file ({e}); re-save the model") from e
        tokenizer = None
        if (d / "tokenizer_config.json").is_file() or (d / "tokenizer.json").is_file():
            from mechscope.tokens import Tokenizer

            tokenizer = Tokenizer.load(d)
        model = cls(cfg, tokenizer=tokenizer)
        load_state(model, state, source=str(w_path))
        return model


def load_state(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` checking names and shapes, with errors naming every mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = [f"{k}: expected {tuple(own[k].shape)}, got {tuple(state[k].shape)}"
           for k in own if k in state and own[k].shape != state[k].shape]
    if missing or extra or bad:
        raise ModelFileError(f"weights in {source} do not fit the config: missing {missing[:5]}, "
                             f"unexpected {extra[:5]}, wrong shapes {bad[:5]}")
    model.load_state_dict(state, strict=True)

