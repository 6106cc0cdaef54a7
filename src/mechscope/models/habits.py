"""TransformerLens's model methods on ``HookedTransformer``: ``to_tokens``, ``to_str_tokens``, ``to_string``,
``to_single_token``, ``generate`` and ``from_pretrained``, so its users' code runs as they wrote it.

Each is a thin delegation: tokenisation to ``model.tokenizer`` (``tokens.py``, one BOS policy), generation
to ``models/generate.py``, loading to ``models/loading.py``. Deliberate differences (see
``docs/from-transformerlens.md``): ``generate`` is greedy unless ``do_sample=True`` (reproducible by
default) and returns the prompt plus continuation without special tokens; ``from_pretrained`` applies no
weight processing and refuses TransformerLens's processing flags instead of ignoring them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from mechscope.errors import ConfigError, TokenError

TextOrTokens = str | Sequence[str] | Tensor | Sequence[int]


class TransformerLensMethods:
    """Mixin of ``HookedTransformer`` (expects ``self.tokenizer`` and ``self.cfg``)."""

    tokenizer: Any

    def _tok(self) -> Any:
        if self.tokenizer is None:
            raise TokenError("this model has no tokenizer: pass token ids, or attach one "
                             "(model.tokenizer = mechscope.Tokenizer...; see docs/tokens.md)")
        return self.tokenizer

    def to_tokens(self, input: str | Sequence[str], prepend_bos: bool | None = None,
                  padding_side: Literal["right", "left"] = "right") -> Tensor:
        """Token ids [batch pos] (TransformerLens's ``model.to_tokens``); BOS follows the tokenizer's policy."""
        return self._tok().to_tokens(input, prepend_bos=prepend_bos, padding_side=padding_side)

    def to_str_tokens(self, input: TextOrTokens, prepend_bos: bool | None = None) -> list[str] | list[list[str]]:
        """Each token as text; a list of strings or a [batch pos] tensor gives one list per row."""
        tok = self._tok()
        if isinstance(input, Tensor) and input.dim() == 2 and input.shape[0] > 1:
            return [tok.to_str_tokens(row) for row in input]
        if not isinstance(input, (str, Tensor)) and isinstance(input, Sequence) and input \
                and all(isinstance(x, str) for x in input):
            return [tok.to_str_tokens(x, prepend_bos=prepend_bos) for x in input]
        return tok.to_str_tokens(input, prepend_bos=prepend_bos)

    def to_string(self, tokens: Tensor | Sequence[int]) -> str | list[str]:
        """Text of token ids: [pos] or a list gives one string, [batch pos] (batch > 1) a list of strings."""
        tok = self._tok()
        if isinstance(tokens, Tensor) and tokens.dim() == 2 and tokens.shape[0] > 1:
            return [tok.to_string(row) for row in tokens]
        return tok.to_string(tokens)

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token (``TokenError`` showing the split otherwise)."""
        return self._tok().to_single_token(string)

    @torch.no_grad()
    def generate(self, input: str | Sequence[str] | Tensor = "", max_new_tokens: int = 10, *,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, stop_at_eos: bool = True, use_past_kv_cache: bool = True,
                 prepend_bos: bool | None = None, seed: int | None = None,
                 return_type: Literal["input", "str", "tokens"] = "input", verbose: bool = False) -> Any:
        """Continue ``input``: a string gives a string (prompt + continuation), a list of strings a list,
        token ids [batch pos] give ids [batch pos + new] (``return_type`` overrides: ``"str"``/``"tokens"``).

        Greedy unless ``do_sample=True`` (then ``temperature``/``top_k``/``top_p``, seeded by ``seed``).
        ``verbose`` is accepted for TransformerLens compatibility and ignored (no progress bar).
        """
        from mechscope.models.generate import generate

        if return_type not in ("input", "str", "tokens"):
            raise ConfigError(f"return_type must be 'input', 'str' or 'tokens', got {return_type!r}")
        if isinstance(input, str) and input == "" and self.tokenizer is not None and prepend_bos is None:
            prepend_bos = True  # an empty prompt starts from BOS, as in TransformerLens
        out = generate(self, input, max_new_tokens=max_new_tokens,  # type: ignore[arg-type]
                       temperature=temperature if do_sample else 0.0, top_k=top_k, top_p=top_p, seed=seed,
                       stop_at_eos=stop_at_eos, use_kv_cache=use_past_kv_cache, prepend_bos=prepend_bos)
        as_tokens = return_type == "tokens" or (return_type == "input" and isinstance(input, Tensor))
        if as_tokens:
            return out.tokens
        if isinstance(input, Tensor):
            texts = [self.to_string(row[m.bool()]) for row, m in zip(out.tokens, out.attention_mask)]
            return texts[0] if len(texts) == 1 else texts
        prompts = [input] if isinstance(input, str) else list(input)
        full = [p + t for p, t in zip(prompts, out.texts)]
        return full[0] if isinstance(input, str) else full

    @classmethod
    def from_pretrained(cls, model_name: str, *, dtype: torch.dtype = torch.float32, download: bool = False,
                        **tl_kwargs: Any) -> Any:
        """TransformerLens's entry point, as ``mechscope.load(model_name)``: a registered name, a path, or a
        Hugging Face name from the local cache (``download=True`` fetches it). No weight processing happens
        (apply ``models/weights.py`` transforms explicitly); TransformerLens's keyword arguments such as
        ``fold_ln=True`` are refused rather than silently ignored."""
        if tl_kwargs:
            raise ConfigError(f"from_pretrained does not take {sorted(tl_kwargs)}: mechscope loads the source "
                              "numbers unchanged; apply weight processing explicitly (mechscope.models.weights, "
                              "see docs/from-transformerlens.md)")
        from mechscope.models.loading import load

        return load(model_name, dtype=dtype, download=download)


__all__ = ["TransformerLensMethods"]
