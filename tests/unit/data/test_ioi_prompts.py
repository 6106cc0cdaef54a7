"""IOI generator and prompt pairs on a toy word tokenizer (whitespace words = single tokens)."""

from __future__ import annotations

import re

import pytest
import torch

from mechscope.data.prompts import make_pairs
from mechscope.data.tasks.ioi import NAMES, TEMPLATES, ioi_pairs, single_token_names
from mechscope.errors import ConfigError, ShapeError, TokenError
from tests.typecheck import ill_typed


class WordTokenizer:
    """Words and punctuation marks are tokens (an independent toy; no BOS)."""

    def __init__(self, words: list[str]) -> None:
        self.vocab = sorted(set(words))
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.vocab_size = len(self.vocab)

    @staticmethod
    def split(text: str) -> list[str]:
        return re.findall(r"[\w'-]+|[^\w\s]", text)

    def encode(self, text: str, prepend_bos: bool | None = None) -> list[int]:
        try:
            return [self.index[w] for w in self.split(text)]
        except KeyError as e:
            raise TokenError(f"unknown word {e}") from e

    def to_single_token(self, text: str) -> int:
        ids = self.encode(text)
        if len(ids) != 1:
            raise TokenError(f"{text!r} is {len(ids)} tokens")
        return ids[0]

    def to_str_tokens(self, ids) -> list[str]:
        return [" " + self.vocab[int(i)] for i in torch.as_tensor(ids).reshape(-1)]

    def to_string(self, ids) -> str:
        return "".join(self.to_str_tokens(ids))


def word_tokenizer(names=NAMES) -> WordTokenizer:
    words = {w for t in TEMPLATES for w in WordTokenizer.split(t.replace("[", " ").replace("]", " "))}
    return WordTokenizer(sorted(words | set(names)))


def test_ioi_roles_orders_and_abc_corruption():
    tok = word_tokenizer()
    p = ioi_pairs(tok, 6, template=0, order="mixed", seed=3)
    assert p.clean.shape == p.corrupted.shape == (6, 14)
    for i, text in enumerate(p.texts):
        words = WordTokenizer.split(text)
        io, s = tok.to_string(p.answer[i : i + 1]).strip(), tok.to_string(p.wrong[i : i + 1]).strip()
        assert words.count(s) == 2 and words.count(io) == 1  # S repeated, IO once
        assert (words.index(io) < words.index(s)) == (i % 2 == 0)  # ABBA on even rows, BABA on odd
        assert int(p.roles["S2"][i]) == len(words) - 5 and int(p.roles["end"][i]) == len(words) - 1
        corrupt_names = [w.strip() for w in tok.to_str_tokens(p.corrupted[i]) if w.strip() in NAMES]
        assert len(set(corrupt_names)) == 3 and not {io, s} & set(corrupt_names)  # ABC: three new names
    abba = ioi_pairs(tok, 4, order="ABBA")
    assert abba.pos_labels[1] == "[IO]" and abba.pos_labels[3] == "[S1]"


def test_single_token_filter_and_errors():
    tok = word_tokenizer()
    assert "Jean Luc" not in single_token_names(tok, ["Mary", "Jean Luc", "Zorro"])
    assert single_token_names(tok, ["Mary", "Jean Luc", "Zorro"]) == ["Mary"]
    with pytest.raises(TokenError, match="single tokens"):
        ioi_pairs(tok, 2, names=["Mary", "John"])
    with pytest.raises(ConfigError, match="slots"):
        ioi_pairs(tok, 2, template="no slots here")
    with pytest.raises(ConfigError, match="order"), ill_typed():
        ioi_pairs(tok, 2, order="AABB")  # type: ignore[arg-type]


def test_make_pairs_errors():
    tok = word_tokenizer()
    with pytest.raises(ShapeError, match="same-length"):
        make_pairs(tok, ["When Mary and John"], ["When Mary"], [" Mary"], [" John"])
    with pytest.raises(ShapeError, match="equal lengths"):
        make_pairs(tok, ["When Mary", "When Mary and"], ["When John", "When John and"], [" Mary"] * 2, [" John"] * 2)
    with pytest.raises(TokenError, match="2 tokens"):
        make_pairs(tok, ["When Mary"], ["When John"], [" Mary John"], [" John"])
    p = make_pairs(tok, ["When Mary"], ["When John"], [" Mary"], [" John"])
    assert torch.equal(p.answer, torch.tensor([tok.to_single_token(" Mary")]))
    assert len(p.subset([0]).texts) == 1
