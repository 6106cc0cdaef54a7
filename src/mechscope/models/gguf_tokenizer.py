"""The tokenizer of a GGUF file, rebuilt as a ``tokenizers.Tokenizer`` that matches llama.cpp's.

A GGUF file stores its vocabulary in metadata (``tokenizer.ggml.tokens`` / ``merges`` / ``token_type``,
the pre-tokenizer family in ``tokenizer.ggml.pre``, the BOS convention in ``tokenizer.ggml.add_bos_token``).
:func:`gguf_tokenizer` turns that into a byte-level BPE tokenizer with llama.cpp's pre-tokenizer regexes and
special-token matching; :func:`gguf_add_bos` answers llama.cpp's BOS question. No BOS/EOS policy lives
here: :class:`mechscope.tokens.Tokenizer` owns it. The weights side of a GGUF file is
``mechscope/models/gguf.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mechscope.errors import ModelFileError

# llama.cpp pre-tokenizer groups (llama-vocab.cpp): `tokenizer.ggml.pre` -> regexes applied in sequence,
# each match isolated, the next regex applied within every piece the previous one produced.
_GPT2_PRE = ("gpt-2", "gpt2", "phi-2", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "jina-v2-code")
_DIGITS_THEN_GPT2_PRE = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b")
_LLAMA3_PRE = ("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral")
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SUPPORTED_PRE_TOKENIZERS = _GPT2_PRE + _DIGITS_THEN_GPT2_PRE + _LLAMA3_PRE
"""``tokenizer.ggml.pre`` values :func:`gguf_tokenizer` reproduces."""

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types


def gguf_add_bos(metadata: Mapping[str, Any]) -> bool:
    """Whether llama.cpp prepends BOS for this vocabulary: ``tokenizer.ggml.add_bos_token``, else its default.

    llama.cpp's default (no flag in the file) is True for sentencepiece (``llama``) vocabularies and the
    Llama-3-style pre-tokenizers, False for other byte-level BPE vocabularies.
    """
    flag = metadata.get("tokenizer.ggml.add_bos_token")
    if flag is not None:
        return bool(flag)
    return (
        metadata.get("tokenizer.ggml.model") == "llama" or metadata.get("tokenizer.ggml.pre") in _LLAMA3_PRE
    )


def gguf_tokenizer(metadata: Mapping[str, Any]) -> Any:
    """A ``tokenizers.Tokenizer`` equal to llama.cpp's for a byte-level BPE (``gpt2``) GGUF vocabulary.

    The pre-tokenizer follows llama.cpp's ``tokenizer.ggml.pre`` (for SmolLM2's ``smollm``: every digit
    ``\\p{N}`` isolated first, then the GPT-2 regex within each piece). Control tokens (type 3, e.g.
    ``<|im_start|>``) and user-defined tokens (type 4) are matched whole in text, as llama.cpp does when it
    parses special tokens. No BOS/EOS is added here: :class:`mechscope.tokens.Tokenizer` owns that policy.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    kind = metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ModelFileError(
            f"GGUF tokenizer model {kind!r} is not supported; supported: 'gpt2' (byte-level BPE). "
            "Load the model with transformers and use Tokenizer.from_hf instead."
        )
    pre = metadata.get("tokenizer.ggml.pre")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=pre not in _LLAMA3_PRE)
    if pre in _GPT2_PRE:
        pre_tok: Any = byte_level
    elif pre in _DIGITS_THEN_GPT2_PRE:
        pre_tok = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\p{N}"), "isolated"), byte_level])
    elif pre in _LLAMA3_PRE:
        pre_tok = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(_LLAMA3_REGEX), "isolated"), byte_level]
        )
    else:
        raise ModelFileError(
            f"GGUF pre-tokenizer {pre!r} is not supported; supported: {', '.join(SUPPORTED_PRE_TOKENIZERS)}."
        )
    tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in metadata.get("tokenizer.ggml.merges", [])]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ModelFileError(f"GGUF vocabulary has duplicate tokens ({len(tokens) - len(vocab)} duplicates).")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=pre in _LLAMA3_PRE))
    tok.pre_tokenizer = pre_tok
    tok.decoder = decoders.ByteLevel()
    types = list(metadata.get("tokenizer.ggml.token_type", []))
    tok.add_special_tokens(
        [AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == _CONTROL]
    )
    tok.add_tokens(
        [
            AddedToken(tokens[i], special=False, normalized=False)
            for i, t in enumerate(types)
            if t == _USER_DEFINED
        ]
    )
    return tok
