"""The smaller defects of issue 17, item 8 (each test failed before its fix)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mechscope.models.transformer import HookedTransformer
from mechscope.tokens import Tokenizer
from tests.conftest import tiny_cfg

DOCS = Path(__file__).resolve().parents[3] / "docs"


@pytest.mark.parametrize(("make", "sample"), [(lambda: Tokenizer.bytes(), "hi!"),
                                              (lambda: Tokenizer.chars("abcxyz ", bos="^"), "abc xyz"),
                                              (lambda: Tokenizer.integers(40, extra=["="]), "3 5 ="),
                                              (lambda: Tokenizer.words(["red", "blue", "green"], bos="<s>"), "red green")],
                         ids=["bytes", "chars", "integers", "words"])
def test_toy_tokenizers_survive_model_save_and_load(tmp_path: Path, make, sample: str) -> None:
    tok = make()
    model = HookedTransformer(tiny_cfg("llama", d_vocab=max(50, tok.vocab_size)), seed=0, tokenizer=tok)
    model.save(tmp_path / "m")
    back = HookedTransformer.load(tmp_path / "m")
    assert back.tokenizer is not None
    assert back.tokenizer.encode(sample) == tok.encode(sample)
    assert back.tokenizer.bos_token_id == tok.bos_token_id and back.tokenizer.add_bos == tok.add_bos


def test_docs_tokens_toy_example_runs() -> None:
    """Every ``# -> value`` line of the toy-vocabulary example in docs/tokens.md evaluates to that value."""
    text = (DOCS / "tokens.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "Tokenizer.integers" in b)
    env: dict[str, object] = {}
    checked = 0
    for line in block.splitlines():
        code, _, want = line.partition("# ->")
        if want:
            assert eval(code.strip(), env) == eval(want.strip()), line  # noqa: S307 (our own docs)
            checked += 1
        elif code.strip():
            exec(code, env)  # noqa: S102
    assert checked >= 3
