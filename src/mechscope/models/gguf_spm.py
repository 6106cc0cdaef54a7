"""A GGUF sentencepiece vocabulary (``tokenizer.ggml.model == "llama"``, e.g. Gemma 3) as a ``tokenizers`` BPE.

Such a file stores pieces (``▁the``, ``<0x0A>``), scores and token types, usually no merges. The tokenizer:

* normalizer: every space becomes ``▁`` (U+2581), with a ``▁`` prepended to each text segment when the file
  says ``tokenizer.ggml.add_space_prefix`` (llama.cpp's default when absent; Gemma 3 says False);
* model: BPE with byte fallback (a character outside the vocabulary becomes its UTF-8 bytes ``<0xNN>``);
  the merges are the file's, or derived from the vocabulary: every split of every piece into two pieces,
  pieces in file order, longer left part first (transformers' rule for Gemma files, whose merge order is
  the order of the pieces; a whitespace-only piece stored with real spaces is respelled with ``▁``);
* control and user-defined tokens are matched whole in the text (``vocab.add_marked_tokens``);
* decoder: ``▁`` -> space, ``<0xNN>`` bytes -> UTF-8, and the prefix space stripped when one was added.

On the Gemma-3-270M file this gives the ids of transformers'
``AutoTokenizer.from_pretrained(dir, gguf_file=..., trust_remote_code=False)`` (docs/gguf.md). Scores are not used: llama.cpp ranks a merge by the merged piece's score, which on Gemma
follows file order for ordinary pieces but not for its whitespace-run pieces, where we follow transformers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mechscope.models.gguf_vocab import add_marked_tokens, token_types, vocab_index

SPACE = "\u2581"
"""Sentencepiece's visible space."""


def respell(token: str) -> str:
    """A whitespace-only piece stored with real spaces (Gemma's ``"  "``) spelled as the model sees it (``▁▁``)."""
    return token.replace(" ", SPACE) if " " in token and not token.strip() else token


def derived_merges(tokens: Sequence[str], vocab: Mapping[str, int]) -> list[tuple[str, str]]:
    """Merges implied by the vocabulary: for each piece in file order, every split into two pieces, longer left first.

    A BPE with these merges builds a piece from the highest-ranked (earliest) pair available, which is how
    transformers rebuilds a merge-less sentencepiece GGUF vocabulary (``generate_merges`` with file positions
    as scores); pieces of one character have no merge.
    """
    merges: list[tuple[str, str]] = []
    for tok in tokens:
        for k in range(len(tok) - 1, 0, -1):
            left, right = tok[:k], tok[k:]
            if left in vocab and right in vocab:
                merges.append((left, right))
    return merges


def sentencepiece_bpe(metadata: Mapping[str, Any]) -> Any:
    """The ``tokenizers.Tokenizer`` of a sentencepiece GGUF vocabulary (see the module docstring)."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    raw: list[str] = list(metadata["tokenizer.ggml.tokens"])
    tokens = [respell(t) for t in raw]
    vocab = vocab_index(tokens)
    file_merges = metadata.get("tokenizer.ggml.merges")
    merges = (
        [tuple(m.split(" ", 1)) for m in file_merges] if file_merges else derived_merges(tokens, vocab)
    )
    unk_id = metadata.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[int(unk_id)] if unk_id is not None else None
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
    replace = normalizers.Replace(" ", SPACE)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), replace]) if prefix else replace
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence([*steps, decoders.Strip(" ", 1, 0)] if prefix else steps)
    add_marked_tokens(tok, raw, token_types(metadata), vocab)
    return tok
