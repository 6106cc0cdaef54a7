"""The one ``Tokenizer`` face every mechscope model uses: text <-> token ids, with ONE BOS policy.

Whatever the vocabulary comes from (a GGUF file's metadata, a transformers tokenizer, or a toy byte /
character / integer vocabulary), a model sees the same methods: :meth:`Tokenizer.to_tokens`,
:meth:`~Tokenizer.encode_batch` (tokens + attention mask), :meth:`~Tokenizer.to_str_tokens`,
:meth:`~Tokenizer.to_string`, :meth:`~Tokenizer.to_single_token`.

**BOS policy (the only one).** Every encoding method takes ``prepend_bos: bool | None = None``.

* ``None`` (default) follows the *source model's own convention*, stored in :attr:`Tokenizer.add_bos`:
  a GGUF file's ``tokenizer.ggml.add_bos_token`` (llama.cpp's default when absent); for a transformers
  tokenizer, whether its ``add_special_tokens=True`` encoding starts with BOS; for toy vocabularies, whether
  the vocabulary was built with a BOS token. SmolLM2 (GGUF) and GPT-2 (transformers) say False; Llama-2
  and Gemma say True. So by default the model sees what it saw in training and in its reference code.
* ``True`` / ``False`` override it (``True`` on a vocabulary without BOS raises :class:`TokenError`).
* BOS is prepended, never EOS appended; BOS is prepended even if the text already starts with it.
* Special tokens written in the text (``"<|im_start|>"``) are matched as their single token, as llama.cpp
  and transformers do.

Batches: a list of texts becomes a ``[batch pos]`` tensor padded with :attr:`pad_token_id` (0 when the
vocabulary has none) on the right (default) or on the left; :meth:`encode_batch` also returns the attention
mask (1 = real token). With left padding BOS is each row's first real token, right after the padding.

``to_str_tokens`` gives each token *decoded* on its own (``" Mary"``; a lone byte of a multi-byte
character shows as ``"\\ufffd"``); ``to_pieces`` gives the vocabulary's own spelling (``"ĠMary"``).

The vocabularies themselves (a ``tokenizers`` BPE, a transformers tokenizer, toy symbols) are backends in
``mechscope/_token_backends.py``; everything policy-like is here, once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch

from mechscope._token_backends import Backend, HFBackend, SymbolBackend, TokenizersBackend
from mechscope._types import Int, Tensor
from mechscope.errors import ModelFileError, ShapeError, TokenError

_FORMAT = "mechscope-tokenizer"
_SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _write_atomic(path: Path, text: str) -> None:
    """Write text via a unique temporary file + fsync + rename, so a crash never leaves half a file."""
    from mechscope.io_safety import atomic_write_text

    atomic_write_text(path, text)


class TokenBatch(NamedTuple):
    """A padded batch: ids and the mask telling real tokens (1) from padding (0)."""

    tokens: Int[Tensor, "batch pos"]
    """Token ids (long), padded with the tokenizer's ``pad_token_id`` (or 0)."""
    attention_mask: Int[Tensor, "batch pos"]
    """1 where ``tokens`` holds a real token (BOS included), 0 on padding (long)."""


class Tokenizer:
    """Text <-> token ids for one vocabulary, with mechscope's single BOS policy (see the module docstring).

    Build with :meth:`from_gguf_metadata`, :meth:`from_gguf`, :meth:`from_hf`, :meth:`from_tokenizers`
    or the toy vocabularies :meth:`bytes`, :meth:`chars`, :meth:`integers`, :meth:`words`.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        bos_token_id: int | None,
        eos_token_id: int | None,
        pad_token_id: int | None,
        add_bos: bool,
    ) -> None:
        """Wrap a backend (prefer the ``from_*`` builders). ``add_bos`` is the source model's convention."""
        n = backend.size()
        for name, value in (("bos", bos_token_id), ("eos", eos_token_id), ("pad", pad_token_id)):
            if value is not None and not 0 <= value < n:
                raise TokenError(f"{name}_token_id={value} is outside the vocabulary [0, {n}).")
        if add_bos and bos_token_id is None:
            raise TokenError("add_bos=True needs a bos_token_id; this vocabulary has none.")
        self._backend = backend
        self.bos_token_id, self.eos_token_id, self.pad_token_id = bos_token_id, eos_token_id, pad_token_id
        self.add_bos = add_bos
        """The source model's convention: whether ``prepend_bos=None`` prepends BOS."""

    # ----- builders -------------------------------------------------------------------------------
    @classmethod
    def from_gguf_metadata(cls, metadata: Mapping[str, Any], *, add_bos: bool | None = None) -> Tokenizer:
        """The tokenizer of a GGUF file's metadata (byte-level BPE ``gpt2`` or sentencepiece ``llama``).

        ``add_bos=None`` takes the file's ``tokenizer.ggml.add_bos_token`` (llama.cpp's default if absent).
        """
        from mechscope.models.gguf_tokenizer import gguf_add_bos, gguf_tokenizer

        def special(key: str) -> int | None:
            value = metadata.get(f"tokenizer.ggml.{key}_token_id")
            return None if value is None else int(value)

        bos, eos = special("bos"), special("eos")
        pad = special("padding")
        return cls(
            TokenizersBackend(gguf_tokenizer(metadata)),
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=pad if pad is not None else eos,
            add_bos=gguf_add_bos(metadata) if add_bos is None else add_bos,
        )

    @classmethod
    def from_gguf(cls, path: str | Path, *, add_bos: bool | None = None) -> Tokenizer:
        """The tokenizer stored in a GGUF file (reads only its metadata)."""
        from mechscope.models.gguf import read_gguf_metadata

        return cls.from_gguf_metadata(read_gguf_metadata(path), add_bos=add_bos)

    @classmethod
    def from_tokenizers(
        cls,
        tok: Any,
        *,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        add_bos: bool = False,
    ) -> Tokenizer:
        """Wrap a ``tokenizers.Tokenizer`` (its post-processor is not used: BOS follows ``add_bos``)."""
        return cls(
            TokenizersBackend(tok),
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            add_bos=add_bos,
        )

    @classmethod
    def from_hf(cls, hf_tokenizer: Any, *, add_bos: bool | None = None) -> Tokenizer:
        """Wrap a transformers tokenizer. ``add_bos=None`` detects whether it prepends BOS itself."""
        bos, eos, pad = hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id, hf_tokenizer.pad_token_id
        if add_bos is None:
            with_special = hf_tokenizer("a", add_special_tokens=True)["input_ids"]
            plain = hf_tokenizer("a", add_special_tokens=False)["input_ids"]
            add_bos = bos is not None and with_special[:1] == [bos] and plain[:1] != [bos]
        return cls(
            HFBackend(hf_tokenizer),
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=pad if pad is not None else eos,
            add_bos=add_bos,
        )

    @classmethod
    def _symbols(
        cls, kind: Literal["bytes", "chars", "words"], symbols: list[str], bos: str | None
    ) -> Tokenizer:
        if len(set(symbols)) != len(symbols) or (bos is not None and bos in symbols):
            raise TokenError(f"{kind} vocabulary has duplicate symbols (or bos={bos!r} is one of them).")
        backend = SymbolBackend(kind, symbols, bos)
        special = None if bos is None else len(symbols)
        return cls(
            backend, bos_token_id=special, eos_token_id=special, pad_token_id=special, add_bos=bos is not None
        )

    @classmethod
    def bytes(cls, *, bos: str | None = "<|endoftext|>") -> Tokenizer:
        """Byte vocabulary: ids 0..255 are UTF-8 bytes; ``bos`` (if given) is id 256, also EOS and pad."""
        return cls._symbols("bytes", [chr(b) for b in range(256)], bos)

    @classmethod
    def chars(cls, alphabet: str | Sequence[str], *, bos: str | None = None) -> Tokenizer:
        """One token per character of ``alphabet`` (in order); ``bos`` (if given) is the last id."""
        symbols = list(alphabet)
        if any(len(c) != 1 for c in symbols):
            raise TokenError(
                f"chars() needs single characters; got {[c for c in symbols if len(c) != 1][:5]}."
            )
        return cls._symbols("chars", symbols, bos)

    @classmethod
    def words(cls, vocab: Sequence[str], *, bos: str | None = None) -> Tokenizer:
        """Whitespace-separated words, each exactly one token (toy tasks); ``bos`` (if given) is the last id."""
        symbols = list(vocab)
        if any(not w or w.split() != [w] for w in symbols):
            raise TokenError("words() needs non-empty symbols without whitespace.")
        return cls._symbols("words", symbols, bos)

    @classmethod
    def integers(cls, n: int, *, extra: Sequence[str] = (), bos: str | None = None) -> Tokenizer:
        """Token ``i`` is the string ``str(i)`` for ``i < n``, then ``extra`` symbols (e.g. ``"="``).

        Text is whitespace-separated: ``"3 5 ="`` -> ``[3, 5, n]`` (modular arithmetic and similar tasks).
        """
        if n < 1:
            raise TokenError(f"integers(n) needs n >= 1, got {n}.")
        return cls.words([str(i) for i in range(n)] + list(extra), bos=bos)

    # ----- properties -----------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of token ids, added/special tokens included (ids are ``0 .. vocab_size-1``)."""
        return self._backend.size()

    # ----- encoding -------------------------------------------------------------------------------
    def _bos(self, prepend_bos: bool | None) -> list[int]:
        """The BOS prefix the policy asks for (empty or ``[bos_token_id]``)."""
        want = self.add_bos if prepend_bos is None else prepend_bos
        if want and self.bos_token_id is None:
            raise TokenError(
                "prepend_bos=True, but this vocabulary has no BOS token; pass prepend_bos=False."
            )
        return [self.bos_token_id] if want and self.bos_token_id is not None else []

    def encode(self, text: str, *, prepend_bos: bool | None = None) -> list[int]:
        """Token ids of one text, as a list (BOS per the policy)."""
        if not isinstance(text, str):
            raise TokenError(f"encode() needs a str, got {type(text).__name__}.")
        return self._bos(prepend_bos) + self._backend.encode([text])[0]

    def encode_batch(
        self,
        texts: str | Sequence[str],
        *,
        prepend_bos: bool | None = None,
        padding_side: Literal["right", "left"] = "right",
    ) -> TokenBatch:
        """Tokens ``[batch pos]`` and attention mask of one text or a list of texts, padded to the longest."""
        if padding_side not in ("right", "left"):
            raise TokenError(f"padding_side must be 'right' or 'left', got {padding_side!r}.")
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not batch or not all(isinstance(t, str) for t in batch):
            raise TokenError("encode_batch() needs a str or a non-empty list of str.")
        prefix = self._bos(prepend_bos)
        rows = [prefix + ids for ids in self._backend.encode(batch)]
        width = max(len(r) for r in rows)
        pad = self.pad_token_id if self.pad_token_id is not None else 0
        tokens = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, r in enumerate(rows):  # one copy per row: ragged lengths
            start = width - len(r) if padding_side == "left" else 0
            tokens[b, start : start + len(r)] = torch.tensor(r, dtype=torch.long)
            mask[b, start : start + len(r)] = 1
        return TokenBatch(tokens, mask)

    def to_tokens(
        self,
        text: str | Sequence[str],
        *,
        prepend_bos: bool | None = None,
        padding_side: Literal["right", "left"] = "right",
    ) -> Int[Tensor, "batch pos"]:
        """Token ids ``[batch pos]`` (``batch=1`` for one string); lists are padded (see :meth:`encode_batch`)."""
        return self.encode_batch(text, prepend_bos=prepend_bos, padding_side=padding_side).tokens

    def to_single_token(self, s: str) -> int:
        """The id of ``s`` if it is exactly one token (no BOS); else :class:`TokenError` showing its split."""
        ids = self._backend.encode([s])[0]
        if len(ids) != 1:
            raise TokenError(
                f"{s!r} is {len(ids)} tokens, not 1: {self._backend.pieces(ids)}. "
                "Use a string that is a single token (mind the leading space, e.g. ' Paris')."
            )
        return ids[0]

    # ----- decoding -------------------------------------------------------------------------------
    def _ids(self, tokens: Tensor | Sequence[int]) -> list[int]:
        """A flat list of ids from a list, a 1-D tensor or a ``[1 pos]`` tensor; range-checked."""
        if isinstance(tokens, Tensor):
            if tokens.dim() == 2 and tokens.shape[0] == 1:
                tokens = tokens[0]
            if tokens.dim() != 1:
                raise ShapeError(
                    f"expected token ids of shape [pos] or [1, pos], got {tuple(tokens.shape)}; "
                    "for a batch use decode_batch()."
                )
            if tokens.is_floating_point():
                raise TokenError(f"token ids must be integers, got dtype {tokens.dtype}.")
            tokens = tokens.tolist()
        ids = [int(i) for i in tokens]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise TokenError(f"token ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size}).")
        return ids

    def to_string(self, tokens: Tensor | Sequence[int]) -> str:
        """The text of a sequence of ids (``[pos]``, ``[1 pos]`` or a list); special tokens are kept."""
        return self._backend.decode(self._ids(tokens))

    def decode_batch(
        self, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"] | None = None
    ) -> list[str]:
        """The text of each row; positions where ``attention_mask`` is 0 (padding) are dropped."""
        if tokens.dim() != 2:
            raise ShapeError(f"decode_batch expects [batch, pos] token ids, got shape {tuple(tokens.shape)}.")
        if attention_mask is not None and attention_mask.shape != tokens.shape:
            raise ShapeError(f"attention_mask {tuple(attention_mask.shape)} != tokens {tuple(tokens.shape)}.")
        rows = (
            tokens
            if attention_mask is None
            else [t[m.bool()] for t, m in zip(tokens, attention_mask, strict=True)]
        )
        return [self.to_string(r) for r in rows]

    def _text_or_ids(self, x: str | Tensor | Sequence[int], prepend_bos: bool | None) -> list[int]:
        return self.encode(x, prepend_bos=prepend_bos) if isinstance(x, str) else self._ids(x)

    def to_str_tokens(
        self, text_or_tokens: str | Tensor | Sequence[int], *, prepend_bos: bool | None = None
    ) -> list[str]:
        """Each token decoded on its own (``[" Mary", " and"]``); text is tokenized first (BOS per policy)."""
        return self._backend.decode_each(self._text_or_ids(text_or_tokens, prepend_bos))

    def to_pieces(
        self, text_or_tokens: str | Tensor | Sequence[int], *, prepend_bos: bool | None = None
    ) -> list[str]:
        """Each token as the vocabulary spells it (byte-level BPE: ``"ĠMary"``, ``"Ċ"`` for a newline)."""
        return self._backend.pieces(self._text_or_ids(text_or_tokens, prepend_bos))

    # ----- persistence ----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``tokenizer_config.json`` (+ ``tokenizer.json`` for BPE vocabularies) into ``directory``.

        A slow (python) transformers tokenizer cannot be saved this way: save it with ``save_pretrained``.
        """
        config: dict[str, Any] = {"format": _FORMAT, "version": 1, "add_bos": self.add_bos}
        config |= {k: getattr(self, k) for k in _SPECIAL_IDS}
        b = self._backend
        raw = None
        if isinstance(b, SymbolBackend):
            config |= {
                "kind": b.kind,
                "symbols": None if b.kind == "bytes" else b.symbols,
                "special": b.special,
            }
        else:
            raw = b.tok if isinstance(b, TokenizersBackend) else getattr(b.hf, "backend_tokenizer", None)
            if raw is None:
                raise TokenError(
                    "a slow transformers tokenizer cannot be saved by mechscope; use save_pretrained."
                )
            config["kind"] = "tokenizers"
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if raw is not None:
            _write_atomic(directory / "tokenizer.json", raw.to_str())
        _write_atomic(directory / "tokenizer_config.json", json.dumps(config, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        """A tokenizer written by :meth:`save`; :class:`ModelFileError` if missing or not mechscope's."""
        from tokenizers import Tokenizer as RawTokenizer

        path = Path(directory) / "tokenizer_config.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
            if config.get("format") != _FORMAT:
                raise ValueError(f"format is {config.get('format')!r}, expected {_FORMAT!r}")
            kind = config["kind"]
            backend: Backend
            if kind == "tokenizers":
                backend = TokenizersBackend(RawTokenizer.from_file(str(path.with_name("tokenizer.json"))))
            else:
                symbols = config["symbols"] or [chr(i) for i in range(256)]
                backend = SymbolBackend(kind, symbols, config["special"])
        except Exception as e:  # missing file, bad JSON, missing keys, unreadable tokenizer.json
            raise ModelFileError(f"cannot load a mechscope tokenizer from {directory}: {e}") from e
        return cls(backend, **{k: config[k] for k in _SPECIAL_IDS}, add_bos=bool(config["add_bos"]))

    def __repr__(self) -> str:
        kind = type(self._backend).__name__.removesuffix("Backend")
        return (
            f"Tokenizer({kind}, vocab_size={self.vocab_size}, bos={self.bos_token_id}, "
            f"eos={self.eos_token_id}, pad={self.pad_token_id}, add_bos={self.add_bos})"
        )
