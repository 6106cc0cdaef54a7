"""GGUF vocabularies beyond SmolLM2's: a tiny sentencepiece (``tokenizer.ggml.model = llama``) vocabulary laid
out like Gemma 3's (control and user-defined tokens, 256 ``<0xNN>`` byte tokens, whitespace runs stored with
real spaces, no merges) and a tiny byte-level ``qwen2`` vocabulary, both written as real GGUF files with
``gguf.GGUFWriter`` and read back. Ids are compared with transformers' own GGUF tokenizer loading
(``AutoTokenizer.from_pretrained(dir, gguf_file=...)``), which never sees mechscope's builders."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from mechscope.errors import ModelFileError
from mechscope.models.gguf import read_gguf_metadata
from mechscope.models.gguf_spm import derived_merges
from mechscope.tokens import Tokenizer

NORMAL, CONTROL, USER, BYTE = 1, 3, 4, 6
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>"]
USER_DEFINED = ["\n", "\n\n", "  ", "   ", "<td>"]  # whitespace runs stored with real spaces, as in Gemma's file
PIECES = ["▁", "a", "b", "c", "t", "h", "e", "s", "1", "2", "é", "▁t", "he", "▁the", "▁a", "at", "▁c", "▁cat",
          "ab", "abc", "▁s", "▁sat", "sat", "12", "▁▁▁▁"]
TEXTS = [
    "the cat sat", " the  cat   sat    ", "abc abcab  ", "\n\nthe\n cat\n\n\n", "12 121 2112",
    "é the café", "naïve ∑ 😀 emoji", "<td>the</td>", "<bos>the<eos> cat", "tab\tcat", "", " ",
    "x" * 30, "the" * 7, "ſ ħ 中文", "    indented\n        code = 12;",
]
"""Spaces in runs, newlines, digits, accents in and out of the vocabulary, emoji, marked tokens, empty text."""


def vocab_writer(path: Path, arch: str) -> Any:
    """A ``GGUFWriter`` for ``arch`` with the hyperparameters transformers' config needs (no tensors follow)."""
    import gguf

    w = gguf.GGUFWriter(path, arch=arch)
    for add, value in ((w.add_block_count, 1), (w.add_embedding_length, 8), (w.add_feed_forward_length, 8),
                       (w.add_head_count, 1), (w.add_head_count_kv, 1), (w.add_context_length, 32)):
        add(value)
    return w


def finish(w: Any, path: Path) -> Path:
    """Write the metadata-only file ``w`` describes to ``path``."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def spm_gguf(path: Path, *, merges: list[str] | None = None, **flags: Any) -> Path:
    """A metadata-only Gemma-3-style GGUF file: the vocabulary above plus the keys transformers' config needs."""

    tokens = SPECIALS + USER_DEFINED + [f"<0x{b:02X}>" for b in range(256)] + PIECES
    types = [CONTROL] * len(SPECIALS) + [USER] * len(USER_DEFINED) + [BYTE] * 256 + [NORMAL] * len(PIECES)
    scores = [-1000.0] * (len(SPECIALS) + len(USER_DEFINED)) + [0.0] * 256 + [-float(i) for i in range(len(PIECES))]
    w = vocab_writer(path, "gemma3")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    if merges is not None:
        w.add_token_merges(merges)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_space_prefix(flags.get("add_space_prefix", False))
    if "add_bos" in flags:
        w.add_add_bos_token(flags["add_bos"])
    return finish(w, path)


def hf_gguf_tokenizer(path: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="module")
def spm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spm_gguf(tmp_path_factory.mktemp("spm") / "spm.gguf")


def test_sentencepiece_ids_equal_transformers_gguf_tokenizer(spm_file: Path) -> None:
    ours = Tokenizer.from_gguf(spm_file)
    hf = hf_gguf_tokenizer(spm_file)
    assert [ours.encode(t, prepend_bos=False) for t in TEXTS] == hf(TEXTS, add_special_tokens=False)["input_ids"]
    # the file's add-BOS convention (absent: llama.cpp's default True for sentencepiece) on both sides
    assert ours.add_bos and [ours.encode(t) for t in TEXTS] == hf(TEXTS)["input_ids"]


def test_sentencepiece_round_trip_and_byte_fallback(spm_file: Path) -> None:
    tok = Tokenizer.from_gguf(spm_file, add_bos=False)
    assert [tok.to_string(tok.encode(t)) for t in TEXTS] == TEXTS
    # "ï" is not a piece: its two UTF-8 bytes; "é" is one; the emoji is four bytes
    assert tok.to_pieces("ïé") == ["<0xC3>", "<0xAF>", "é"]
    assert tok.to_pieces("😀") == [f"<0x{b:02X}>" for b in "😀".encode()]
    assert tok.to_str_tokens(" the  cat") == [" the", "  ", "c", "at"]  # no prefix space; "  " is "▁▁"
    assert tok.to_pieces(" the  cat") == ["▁the", "▁▁", "c", "at"] and tok.to_pieces("\n\n\n") == ["\n\n", "\n"]
    assert tok.to_pieces("<td>the") == ["<td>", "t", "he"]  # a user-defined token is matched whole
    assert tok.to_pieces("<start_of_turn>the") == ["<start_of_turn>", "t", "he"]  # and a control token


def test_sentencepiece_tokenizer_saves_and_loads(spm_file: Path, tmp_path: Path) -> None:
    tok = Tokenizer.from_gguf(spm_file)
    tok.save(tmp_path)
    back = Tokenizer.load(tmp_path)
    assert repr(back) == repr(tok) and back.add_bos
    assert [back.encode(t) for t in TEXTS] == [tok.encode(t) for t in TEXTS]
    assert [back.to_string(back.encode(t, prepend_bos=False)) for t in TEXTS] == TEXTS


def test_sentencepiece_bos_and_specials(tmp_path: Path, spm_file: Path) -> None:
    tok = Tokenizer.from_gguf(spm_file)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.vocab_size) == (2, 1, 0, 266 + len(PIECES))
    assert tok.to_tokens("the cat")[0].tolist() == [2, *tok.encode("the cat", prepend_bos=False)]
    assert tok.to_tokens("the cat", prepend_bos=False)[0].tolist() == tok.encode("the cat", prepend_bos=False)
    off = Tokenizer.from_gguf(spm_gguf(tmp_path / "nobos.gguf", add_bos=False))
    assert off.add_bos is False and off.to_tokens("the")[0].tolist() == off.encode("the") == [270, 278]
    assert Tokenizer.from_gguf(spm_file, add_bos=False).add_bos is False


def test_sentencepiece_space_prefix_and_file_merges(tmp_path: Path) -> None:
    """llama.cpp's ``add_space_prefix``: a ``▁`` before each text segment, stripped again on decoding."""
    tok = Tokenizer.from_gguf(spm_gguf(tmp_path / "prefix.gguf", add_space_prefix=True), add_bos=False)
    assert tok.to_pieces("the cat") == ["▁the", "▁cat"]
    assert tok.to_pieces("<bos>the") == ["<bos>", "▁the"]
    assert tok.to_string(tok.encode("the cat sat")) == "the cat sat"
    # merges stored in the file are used as given: only "▁ t" and "h e" here, so "▁the" is never built
    given = Tokenizer.from_gguf(spm_gguf(tmp_path / "merges.gguf", merges=["▁ t", "h e"]), add_bos=False)
    assert given.to_pieces(" the") == ["▁t", "he"]


def test_derived_merges_follow_file_order_longer_left_first() -> None:
    tokens = ["a", "b", "c", "ab", "bc", "abc"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert derived_merges(tokens, vocab) == [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")]


def test_unsupported_vocabulary_kind_is_named(tmp_path: Path) -> None:
    meta = dict(read_gguf_metadata(spm_gguf(tmp_path / "x.gguf")))
    with pytest.raises(ModelFileError, match=r"tokenizer model 'rwkv' is not supported; supported: 'gpt2', 'llama'"):
        Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.model": "rwkv"})
    with pytest.raises(ModelFileError, match="no vocabulary"):
        Tokenizer.from_gguf_metadata({"tokenizer.ggml.model": "llama"})


# ----- qwen2: byte-level BPE with llama.cpp's LLAMA_VOCAB_PRE_TYPE_QWEN2 regex -----------------------------


def qwen2_gguf(path: Path) -> Path:
    """A metadata-only qwen2 GGUF: the 256 byte-level symbols, a few merges, one control token."""
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    merges = ["Ġ t", "h e", "Ġt he", "Ġ c", "a t", "Ġc at", "1 2", "Ġ Ġ", "Ċ Ċ", "' s", "' S"]
    tokens = alphabet + [m.replace(" ", "") for m in merges] + ["<|im_start|>"]
    w = vocab_writer(path, "qwen2")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([NORMAL] * (len(tokens) - 1) + [CONTROL])
    w.add_token_merges(merges)
    w.add_eos_token_id(len(tokens) - 1)
    w.add_add_bos_token(False)
    return finish(w, path)


def test_qwen2_pre_tokenizer_splits_like_llama_cpp(tmp_path: Path) -> None:
    tok = Tokenizer.from_gguf(qwen2_gguf(tmp_path / "q.gguf"))
    pre = tok._backend.tok.pre_tokenizer  # type: ignore[attr-defined]
    # hand-derived from llama.cpp's regex: single digits, contractions in either case, one leading non-letter
    got = [s for s, _ in pre.pre_tokenize_str("I'M 123 don't\n\n  x")]
    assert got == ["I", "'M", "Ġ", "1", "2", "3", "Ġdon", "'t", "ĊĊ", "Ġ", "Ġx"]


def test_qwen2_ids_equal_transformers_gguf_tokenizer(tmp_path: Path) -> None:
    path = qwen2_gguf(tmp_path / "q.gguf")
    ours = Tokenizer.from_gguf(path)
    texts = [*TEXTS, "It'S the cat's 12th\r\n\r\n", "<|im_start|>the cat", "a\u00a0b\u3000c"]
    assert [ours.encode(t) for t in texts] == hf_gguf_tokenizer(path)(texts, add_special_tokens=False)["input_ids"]
    assert ours.add_bos is False and [ours.to_string(ours.encode(t)) for t in texts] == texts
