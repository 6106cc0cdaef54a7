"""The Tokenizer face: BOS policy, batching, toy vocabularies, errors; and the SmolLM2 GGUF tokenizer
against llama.cpp's documented behaviour and transformers' GGUF tokenizer (marked ``model``)."""

from __future__ import annotations

import ast
import re
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import torch

from mechscope.errors import ModelFileError, ShapeError, TokenError
from mechscope.models.gguf import gguf_add_bos, gguf_tokenizer
from mechscope.models.registry import locate_gguf
from mechscope.tokens import Tokenizer
from tests.typecheck import ill_typed

# ----- toy vocabularies ------------------------------------------------------------------------------


def test_bytes_roundtrip_and_bos_policy() -> None:
    tok = Tokenizer.bytes()
    text = "héllo wörld ✓ <|endoftext|> end"
    ids = tok.encode(text)
    assert tok.vocab_size == 257 and tok.add_bos and ids[0] == 256
    assert ids[1:6] == list(b"h\xc3\xa9l")[:4] + [ord("l")]
    assert tok.to_string(ids) == "<|endoftext|>" + text  # BOS prepended (policy), the in-text one kept
    assert tok.encode(text, prepend_bos=False) == [*"héllo wörld ✓ ".encode(), 256, *b" end"]
    assert tok.to_str_tokens("hi", prepend_bos=False) == ["h", "i"]
    assert tok.to_pieces("é", prepend_bos=False) == ["<0xC3>", "<0xA9>"]
    plain = Tokenizer.bytes(bos=None)
    assert plain.vocab_size == 256 and not plain.add_bos and plain.encode("a") == [97]
    with pytest.raises(TokenError, match="no BOS token"):
        plain.to_tokens("a", prepend_bos=True)


def test_chars_and_errors() -> None:
    tok = Tokenizer.chars("abc", bos="<s>")
    assert tok.vocab_size == 4 and tok.bos_token_id == 3 and tok.add_bos
    assert tok.to_tokens("cab").tolist() == [[3, 2, 0, 1]]
    assert tok.to_string([3, 2, 0]) == "<s>ca"
    with pytest.raises(TokenError, match=r"'d' \(in 'abd'\) is not in this chars vocabulary"):
        tok.to_tokens("abd")
    with pytest.raises(TokenError, match="duplicate"):
        Tokenizer.chars("aba")
    with pytest.raises(TokenError, match="single characters"):
        Tokenizer.chars(["a", "bc"])


def test_integers_vocabulary() -> None:
    tok = Tokenizer.integers(113, extra=["="])
    assert tok.vocab_size == 114 and tok.bos_token_id is None and tok.pad_token_id is None
    assert tok.to_tokens("12 7 =").tolist() == [[12, 7, 113]]
    assert tok.to_string(torch.tensor([[12, 7, 113]])) == "12 7 ="
    assert tok.to_single_token("112") == 112 and tok.to_str_tokens([5, 113]) == ["5", "="]
    with pytest.raises(TokenError, match="'113'"):
        tok.to_tokens("113 =")
    with pytest.raises(TokenError, match="is 2 tokens"):
        tok.to_single_token("1 2")


def test_batches_padding_and_masks() -> None:
    tok = Tokenizer.chars("abcdef", bos="^")  # bos id 6 is also the pad id
    texts = ["abc", "d", "ef"]
    right = tok.encode_batch(texts)
    assert right.tokens.tolist() == [[6, 0, 1, 2], [6, 3, 6, 6], [6, 4, 5, 6]]
    assert right.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]
    left = tok.encode_batch(texts, padding_side="left", prepend_bos=False)
    assert left.tokens.tolist() == [[0, 1, 2], [6, 6, 3], [6, 4, 5]]
    assert left.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert tok.decode_batch(left.tokens, left.attention_mask) == texts
    assert torch.equal(tok.to_tokens(texts), right.tokens) and right.tokens.dtype == torch.long
    no_pad = Tokenizer.integers(5).encode_batch(["1 2", "3"])
    assert no_pad.tokens.tolist() == [[1, 2], [3, 0]] and no_pad.attention_mask.tolist() == [[1, 1], [1, 0]]
    with pytest.raises(TokenError, match="padding_side"), ill_typed():
        tok.encode_batch(texts, padding_side="middle")  # type: ignore[arg-type]
    with pytest.raises(TokenError, match="non-empty list"):
        tok.encode_batch([])


def test_bad_token_ids() -> None:
    tok = Tokenizer.chars("ab")
    with pytest.raises(TokenError, match=r"token ids \[2, -1\] are outside the vocabulary \[0, 2\)"):
        tok.to_string([0, 2, -1])
    with pytest.raises(TokenError, match="integers"):
        tok.to_string(torch.tensor([0.0, 1.0]))
    with pytest.raises(ShapeError, match="decode_batch"):
        tok.to_str_tokens(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TokenError, match="is 0 tokens"):
        tok.to_single_token("")


def test_from_hf_detects_bos_convention() -> None:
    """A transformers tokenizer whose post-processor adds BOS: the wrapper's default equals its encoding."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models, pre_tokenizers, processors

    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, "a": 3, "b": 4, "c": 5}
    raw = RawTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>")
    tok = Tokenizer.from_hf(hf)
    assert tok.add_bos and tok.bos_token_id == 0 and tok.pad_token_id == 1  # pad falls back to EOS
    assert tok.to_tokens("a b c").tolist() == [hf("a b c")["input_ids"]] == [[0, 3, 4, 5]]
    assert tok.to_tokens("a b", prepend_bos=False).tolist() == [[3, 4]]
    assert not Tokenizer.from_hf(hf, add_bos=False).add_bos
    wrapped = Tokenizer.from_tokenizers(raw, bos_token_id=0, add_bos=False)
    assert wrapped.to_tokens("c a").tolist() == [[5, 3]]  # the raw post-processor is not used


def test_save_load_toy_vocabularies(tmp_path: Path) -> None:
    for i, tok in enumerate(
        [Tokenizer.bytes(), Tokenizer.chars("xyz", bos="^"), Tokenizer.integers(7, extra=["="])]
    ):
        tok.save(tmp_path / str(i))
        back = Tokenizer.load(tmp_path / str(i))
        text = ["héllo ✓", "zyx^x", "6 0 ="][i]
        assert back.to_tokens(text).tolist() == tok.to_tokens(text).tolist() and back.to_string(
            tok.encode(text)
        )
        assert (back.vocab_size, back.bos_token_id, back.pad_token_id, back.add_bos) == (
            tok.vocab_size,
            tok.bos_token_id,
            tok.pad_token_id,
            tok.add_bos,
        )
    with pytest.raises(ModelFileError, match="cannot load a mechscope tokenizer"):
        Tokenizer.load(tmp_path / "missing")
    (tmp_path / "0" / "tokenizer_config.json").write_text('{"format": "other"}')
    with pytest.raises(ModelFileError, match="expected 'mechscope-tokenizer'"):
        Tokenizer.load(tmp_path / "0")


# ----- GGUF metadata -> tokenizer (no model file) ---------------------------------------------------


def tiny_meta(pre: str, model: str = "gpt2", **extra: Any) -> dict[str, Any]:
    tokens = ["<s>", "a", "b", "Ġ", "Ġa", "1", "2"]
    return {
        "tokenizer.ggml.model": model,
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": ["Ġ a"],
        "tokenizer.ggml.token_type": [3] + [1] * (len(tokens) - 1),
        "tokenizer.ggml.bos_token_id": 0,
        **extra,
    }


def split(pre: str, text: str) -> list[str]:
    return [s for s, _ in gguf_tokenizer(tiny_meta(pre)).pre_tokenizer.pre_tokenize_str(text)]


def test_pre_tokenizers_follow_llama_cpp_regexes() -> None:
    # smollm: \p{N} isolated first, then the GPT-2 regex inside each piece (hand-derived from llama.cpp)
    assert split("smollm", "\n    0 ab12") == ["ĊĠĠĠĠ", "0", "Ġab", "1", "2"]
    # gpt-2: digits stay grouped, whitespace before a word joins it
    assert split("gpt-2", "\n    0 ab12") == ["ĊĠĠĠ", "Ġ0", "Ġab", "12"]
    # llama3: digits in groups of at most three
    assert split("llama-bpe", "12345 abc") == ["123", "45", "Ġabc"]
    # qwen2: single digits, a contraction in either case, whitespace before a digit stands alone
    assert split("qwen2", "It'S 12 ab") == ["It", "'S", "Ġ", "1", "2", "Ġab"]
    tok = Tokenizer.from_gguf_metadata(tiny_meta("smollm"))
    assert tok.encode("<s> a") == [0, 4] and tok.to_pieces("<s> a") == ["<s>", "Ġa"]  # control token whole


def test_gguf_tokenizer_errors_and_bos_defaults() -> None:
    with pytest.raises(ModelFileError, match="tokenizer model 'rwkv' is not supported; supported: 'gpt2', 'llama'"):
        Tokenizer.from_gguf_metadata(tiny_meta("default", model="rwkv"))
    with pytest.raises(ModelFileError, match="pre-tokenizer 'mystery' is not supported; supported: gpt-2"):
        Tokenizer.from_gguf_metadata(tiny_meta("mystery"))
    assert gguf_add_bos(tiny_meta("smollm")) is False and gguf_add_bos(tiny_meta("llama-bpe")) is True
    assert gguf_add_bos(tiny_meta("llama-bpe", **{"tokenizer.ggml.add_bos_token": False})) is False
    assert Tokenizer.from_gguf_metadata(tiny_meta("llama-bpe")).to_tokens("a").tolist() == [[0, 1]]
    assert Tokenizer.from_gguf_metadata(tiny_meta("llama-bpe"), add_bos=False).to_tokens("a").tolist() == [
        [1]
    ]


# ----- the real SmolLM2 tokenizer --------------------------------------------------------------------


@pytest.fixture(scope="session")
def smol() -> Tokenizer:
    return Tokenizer.from_gguf(locate_gguf("smollm2-135m"))


@pytest.fixture(scope="session")
def docstrings() -> list[str]:
    """Real English + code text: every docstring (> 40 chars) of a few stdlib modules."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    names = ["textwrap", "argparse", "json/decoder", "collections/__init__", "inspect", "typing", "functools"]
    names += ["pathlib", "datetime", "random", "statistics", "fractions", "_pydecimal"]
    out = []
    for name in names:
        tree = ast.parse((stdlib / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False)
                if doc and len(doc) > 40:
                    out.append(doc)
    assert len(out) > 300
    return out


@pytest.mark.model
def test_smollm_digit_split_like_llama_cpp(smol: Tokenizer) -> None:
    assert smol.to_pieces("\n    0") == ["ĊĠĠĠĠ", "0"]
    assert smol.to_pieces("in 2024") == ["in", "Ġ", "2", "0", "2", "4"]
    assert smol.to_str_tokens("x=10") == ["x", "=", "1", "0"]


@pytest.mark.model
def test_smollm_bos_policy_and_specials(smol: Tokenizer) -> None:
    assert (smol.bos_token_id, smol.eos_token_id, smol.pad_token_id, smol.vocab_size) == (1, 2, 2, 49152)
    assert smol.add_bos is False  # the file says tokenizer.ggml.add_bos_token = False
    plain = smol.to_tokens("Hello world")
    assert plain[0, 0].item() != 1 and smol.to_str_tokens(plain) == ["Hello", " world"]
    with_bos = smol.to_tokens("Hello world", prepend_bos=True)
    assert with_bos[0].tolist() == [1, *plain[0].tolist()]
    left = smol.encode_batch(["Hello world, friends", "Hi"], prepend_bos=True, padding_side="left")
    first_real = left.attention_mask.argmax(dim=1)
    assert left.tokens[torch.arange(2), first_real].tolist() == [1, 1]
    assert smol.encode("<|im_start|>user\nHi")[:1] == [1]  # a control token written in the text is one token


@pytest.mark.model
def test_smollm_single_tokens(smol: Tokenizer) -> None:
    paris = smol.to_single_token(" Paris")
    assert smol.to_str_tokens([paris]) == [" Paris"] and smol.to_pieces([paris]) == ["ĠParis"]
    with pytest.raises(
        TokenError, match=r"'Parisian house' is 3 tokens, not 1: \['Paris', 'ian', 'Ġhouse'\]"
    ):
        smol.to_single_token("Parisian house")


@pytest.mark.model
def test_smollm_roundtrip_on_real_text(smol: Tokenizer, docstrings: list[str]) -> None:
    batch = smol.encode_batch(docstrings)
    assert smol.decode_batch(batch.tokens, batch.attention_mask) == docstrings


@pytest.mark.model
def test_smollm_save_load(smol: Tokenizer, docstrings: list[str], tmp_path: Path) -> None:
    smol.save(tmp_path)
    back = Tokenizer.load(tmp_path)
    assert repr(back) == repr(smol)
    assert torch.equal(back.to_tokens(docstrings[:50]), smol.to_tokens(docstrings[:50]))


@pytest.mark.model
def test_smollm_equals_transformers_gguf_tokenizer(smol: Tokenizer, docstrings: list[str]) -> None:
    """Same ids as transformers' GGUF tokenizer wherever its known digit bug cannot show (no space+digit)."""
    transformers = pytest.importorskip("transformers")
    path = locate_gguf()
    hf = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    texts = [t for t in docstrings if not re.search(r"\s\d", t)]
    assert len(texts) > 300 and sum(bool(re.search(r"\d", t)) for t in texts) > 10
    ours = [smol.encode(t) for t in texts]
    assert ours == hf(texts, add_special_tokens=False)["input_ids"]
    wrapped = Tokenizer.from_hf(hf)
    assert not wrapped.add_bos and wrapped.vocab_size == smol.vocab_size
    assert wrapped.to_str_tokens(texts[0]) == smol.to_str_tokens(texts[0])
    assert wrapped.to_string(ours[1]) == smol.to_string(ours[1]) == texts[1]
