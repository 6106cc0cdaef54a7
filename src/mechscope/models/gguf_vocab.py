"""What every GGUF vocabulary builder shares: the token -> id map and the tokens matched whole in text.

The builders themselves (byte-level BPE in ``gguf_tokenizer.py``, sentencepiece in ``gguf_spm.py``) differ
in how text becomes pieces; both read ``tokenizer.ggml.tokens`` / ``token_type`` the same way, here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mechscope.errors import ModelFileError

CONTROL, USER_DEFINED = 3, 4
"""llama.cpp token types (``tokenizer.ggml.token_type``): control (``<bos>``) and user-defined (``<think>``)."""


def vocab_index(tokens: Sequence[str]) -> dict[str, int]:
    """``token -> id``; ModelFileError if two ids share a spelling (the file would be ambiguous)."""
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ModelFileError(f"GGUF vocabulary has duplicate tokens ({len(tokens) - len(vocab)} duplicates).")
    return vocab


def token_types(metadata: Mapping[str, Any]) -> list[int]:
    """``tokenizer.ggml.token_type`` as ints (empty when the file has none)."""
    return [int(t) for t in metadata.get("tokenizer.ggml.token_type", [])]


def add_marked_tokens(tok: Any, tokens: Sequence[str], types: Sequence[int], vocab: Mapping[str, int]) -> None:
    """Match control tokens (as special) and user-defined tokens (as plain added tokens) whole in text.

    llama.cpp parses both out of the text before tokenizing the rest, and transformers' GGUF conversion
    adds them the same way. A user-defined token whose spelling is not in ``vocab`` (a builder respelled
    it) is left to the model, as transformers does.
    """
    from tokenizers import AddedToken

    tok.add_special_tokens(
        [AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == CONTROL]
    )
    tok.add_tokens(
        [
            AddedToken(tokens[i], special=False, normalized=False)
            for i, t in enumerate(types)
            if t == USER_DEFINED and tokens[i] in vocab
        ]
    )
