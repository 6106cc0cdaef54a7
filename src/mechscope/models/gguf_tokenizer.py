"""The tokenizer of a GGUF file, rebuilt as a ``tokenizers.Tokenizer`` that matches llama.cpp's.

A GGUF file stores its vocabulary in metadata (``tokenizer.ggml.tokens`` / ``merges`` / ``token_type``,
the vocabulary kind in ``tokenizer.ggml.model``, the pre-tokenizer family in ``tokenizer.ggml.pre``, the BOS
convention in ``tokenizer.ggml.add_bos_token``). :func:`gguf_tokenizer` picks a builder by
``tokenizer.ggml.model`` from :data:`VOCAB_BUILDERS`: ``gpt2`` (byte-level BPE with llama.cpp's
pre-tokenizer regexes, here) or ``llama`` (sentencepiece, ``gguf_spm.py``); :func:`gguf_add_bos` answers
llama.cpp's BOS question. No BOS/EOS policy lives here: :class:`mechscope.tokens.Tokenizer` owns it. The
weights side of a GGUF file is ``mechscope/models/gguf.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mechscope.errors import ModelFileError
from mechscope.models.gguf_spm import sentencepiece_bpe
from mechscope.models.gguf_vocab import add_marked_tokens, token_types, vocab_index

# llama.cpp pre-tokenizer groups (llama-vocab.cpp): `tokenizer.ggml.pre` -> regexes applied in sequence,
# each match isolated, the next regex applied within every piece the previous one produced.
_GPT2_PRE = ("gpt-2", "gpt2", "phi-2", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "jina-v2-code")
_DIGITS_THEN_GPT2_PRE = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b")
_LLAMA3_PRE = ("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral")
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_PRE = ("qwen2", "deepseek-r1-qwen", "stablelm2")  # LLAMA_VOCAB_PRE_TYPE_QWEN2 (and STABLELM2's twin)
# llama.cpp's rewrite of Qwen2's tokenizer.json regex `(?i:'s|'t|...)` with explicit case classes.
_QWEN2_REGEX = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLIT_THEN_BYTES = {**dict.fromkeys(_LLAMA3_PRE, _LLAMA3_REGEX), **dict.fromkeys(_QWEN2_PRE, _QWEN2_REGEX)}
SUPPORTED_PRE_TOKENIZERS = _GPT2_PRE + _DIGITS_THEN_GPT2_PRE + _LLAMA3_PRE + _QWEN2_PRE
"""``tokenizer.ggml.pre`` values :func:`gguf_tokenizer` reproduces for byte-level BPE (``gpt2``) vocabularies."""


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


def byte_level_bpe(metadata: Mapping[str, Any]) -> Any:
    """A ``tokenizers.Tokenizer`` equal to llama.cpp's for a byte-level BPE (``gpt2``) GGUF vocabulary.

    The pre-tokenizer follows llama.cpp's ``tokenizer.ggml.pre`` (for SmolLM2's ``smollm``: every digit
    ``\\p{N}`` isolated first, then the GPT-2 regex within each piece; for ``qwen2``: single digits, letters
    with one leading non-letter, as llama.cpp's ``LLAMA_VOCAB_PRE_TYPE_QWEN2``). Control tokens (type 3, e.g.
    ``<|im_start|>``) and user-defined tokens (type 4) are matched whole in text, as llama.cpp does when it
    parses special tokens.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    pre = metadata.get("tokenizer.ggml.pre")
    whole_words = pre in _LLAMA3_PRE  # llama.cpp looks a whole pre-token up before merging (ignore_merges)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=pre not in _SPLIT_THEN_BYTES)
    if pre in _GPT2_PRE:
        pre_tok: Any = byte_level
    elif pre in _DIGITS_THEN_GPT2_PRE:
        pre_tok = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\p{N}"), "isolated"), byte_level])
    elif pre in _SPLIT_THEN_BYTES:
        pre_tok = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(_SPLIT_THEN_BYTES[pre]), "isolated"), byte_level]
        )
    else:
        raise ModelFileError(
            f"GGUF pre-tokenizer {pre!r} is not supported; supported: {', '.join(SUPPORTED_PRE_TOKENIZERS)}."
        )
    tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in metadata.get("tokenizer.ggml.merges", [])]
    vocab = vocab_index(tokens)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=whole_words))
    tok.pre_tokenizer = pre_tok
    tok.decoder = decoders.ByteLevel()
    add_marked_tokens(tok, tokens, token_types(metadata), vocab)
    return tok


VOCAB_BUILDERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "gpt2": byte_level_bpe,
    "llama": sentencepiece_bpe,
}
"""``tokenizer.ggml.model`` -> the builder of its ``tokenizers.Tokenizer`` (one entry per vocabulary kind)."""

SUPPORTED_TOKENIZER_MODELS = tuple(VOCAB_BUILDERS)
"""``tokenizer.ggml.model`` values :func:`gguf_tokenizer` rebuilds."""


def gguf_tokenizer(metadata: Mapping[str, Any]) -> Any:
    """The ``tokenizers.Tokenizer`` of a GGUF vocabulary, built by its ``tokenizer.ggml.model`` entry.

    No BOS/EOS is added here: :class:`mechscope.tokens.Tokenizer` owns that policy. A file without a
    vocabulary, or of a kind not in :data:`VOCAB_BUILDERS`, raises ``ModelFileError`` naming what is supported.
    """
    kind = metadata.get("tokenizer.ggml.model")
    if "tokenizer.ggml.tokens" not in metadata:
        raise ModelFileError("the GGUF file has no vocabulary (no tokenizer.ggml.tokens)")
    builder = VOCAB_BUILDERS.get(str(kind))
    if builder is None:
        raise ModelFileError(
            f"GGUF tokenizer model {kind!r} is not supported; supported: "
            f"{', '.join(repr(k) for k in SUPPORTED_TOKENIZER_MODELS)} (gpt2: byte-level BPE, llama: sentencepiece). "
            "Load the model with transformers and use Tokenizer.from_hf instead."
        )
    return builder(metadata)
