"""The vocabularies behind :class:`mechscope.tokens.Tokenizer`: what encodes and decodes token ids.

A backend does only what a vocabulary itself knows (encode texts to ids without special handling, decode
ids, spell single tokens, report its size); the BOS policy, padding, batching, range checks and
persistence live in the one ``Tokenizer`` face (``mechscope/tokens.py``), so they are written once.
Three kinds:

* :class:`TokenizersBackend`: a ``tokenizers.Tokenizer`` (a GGUF byte-level BPE built by
  :func:`mechscope.models.gguf_tokenizer.gguf_tokenizer`, or a fast transformers tokenizer's backend);
* :class:`HFBackend`: a transformers tokenizer used through its public methods (slow ones included);
* :class:`SymbolBackend`: toy vocabularies (bytes, characters, whitespace-separated words).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from mechscope.errors import TokenError


class TokenizersBackend:
    """A ``tokenizers.Tokenizer`` (GGUF byte-level BPE, or a fast transformers tokenizer's backend)."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def decode_each(self, ids: list[int]) -> list[str]:
        return self.tok.decode_batch([[i] for i in ids], skip_special_tokens=False)

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.tok.id_to_token(i) for i in ids]

    def size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)


class HFBackend:
    """A transformers tokenizer (slow or fast), used through its public methods only."""

    def __init__(self, hf: Any) -> None:
        self.hf = hf

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [list(x) for x in self.hf(texts, add_special_tokens=False)["input_ids"]]

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def decode_each(self, ids: list[int]) -> list[str]:
        return [self.decode([i]) for i in ids]

    def pieces(self, ids: list[int]) -> list[str]:
        return list(self.hf.convert_ids_to_tokens(ids))

    def size(self) -> int:
        return len(self.hf)


class SymbolBackend:
    """A toy vocabulary: bytes, single characters, or whitespace-separated words, plus an optional special.

    ``kind="bytes"``: ids 0..255 are the UTF-8 bytes; ``"chars"``: one id per character of the alphabet;
    ``"words"``: text is split on whitespace and each word must be a symbol (decoded joined by spaces).
    The special token (if any) is the last id and is recognised in text.
    """

    def __init__(
        self, kind: Literal["bytes", "chars", "words"], symbols: list[str], special: str | None
    ) -> None:
        self.kind, self.symbols, self.special = kind, symbols, special
        self.index = {s: i for i, s in enumerate(symbols)}
        if special is not None:
            self.index[special] = len(symbols)
        self.split = re.compile(f"({re.escape(special)})") if special and kind != "words" else None

    def _encode_one(self, text: str) -> list[int]:
        if self.kind == "words":
            return [self._lookup(w, text) for w in text.split()]
        parts = self.split.split(text) if self.split else [text]
        ids: list[int] = []
        for k, part in enumerate(parts):
            if k % 2 == 1:  # a captured special token
                ids.append(len(self.symbols))
            elif self.kind == "bytes":
                ids.extend(part.encode("utf-8"))
            else:
                ids.extend(self._lookup(c, text) for c in part)
        return ids

    def _lookup(self, symbol: str, text: str) -> int:
        if symbol not in self.index:
            shown = "".join(self.symbols[:60]) if self.kind == "chars" else " ".join(self.symbols[:20])
            raise TokenError(
                f"{symbol!r} (in {text[:40]!r}) is not in this {self.kind} vocabulary of {self.size()} "
                f"tokens: {shown!r}{' ...' if len(self.symbols) > 20 else ''}"
                f"{f' + special {self.special!r}' if self.special else ''}."
            )
        return self.index[symbol]

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [self._encode_one(t) for t in texts]

    def _symbol(self, i: int) -> str:
        return self.special if i == len(self.symbols) and self.special else self.symbols[i]

    def decode(self, ids: list[int]) -> str:
        if self.kind == "words":
            return " ".join(self._symbol(i) for i in ids)
        if self.kind == "chars":
            return "".join(self._symbol(i) for i in ids)
        out, run = [], bytearray()
        for i in ids:
            if i < 256:
                run.append(i)
            else:
                out += [run.decode("utf-8", "replace"), self._symbol(i)]
                run = bytearray()
        return "".join([*out, run.decode("utf-8", "replace")])

    def decode_each(self, ids: list[int]) -> list[str]:
        return [self.decode([i]) for i in ids]

    def pieces(self, ids: list[int]) -> list[str]:
        return [f"<0x{i:02X}>" if self.kind == "bytes" and i < 256 else self._symbol(i) for i in ids]

    def size(self) -> int:
        return len(self.symbols) + (self.special is not None)


Backend = TokenizersBackend | HFBackend | SymbolBackend
"""What a vocabulary does (encode / decode / decode_each / pieces / size); the face adds the rest."""
