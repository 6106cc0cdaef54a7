"""The tour's core sections on a tiny random model with SmolLM2's real tokenizer (fast, no model load)."""

from __future__ import annotations

import pytest

from mechscope.experiments.tour import run_tour
from mechscope.models.registry import locate_gguf
from mechscope.tokens import Tokenizer
from tests.helpers import tiny_model


@pytest.fixture(scope="module")
def smol_tokenizer() -> Tokenizer:
    return Tokenizer.from_gguf(locate_gguf("smollm2-135m"))


def test_core_tour_sections_render(tmp_path, smol_tokenizer) -> None:
    model = tiny_model("llama", d_vocab=smol_tokenizer.vocab_size, n_ctx=128)
    model.tokenizer = smol_tokenizer
    result = run_tour(tmp_path, model=model, extra=[])
    assert result.failed == []
    assert result.sections == ["model", "ioi", "logit_lens", "induction"]
    html = result.path.read_text()
    for title in ("Model and generation", "Indirect object identification", "Logit lens", "Induction heads"):
        assert title in html
    assert "prompts from" in html and "msattn" in html


def test_a_failing_section_is_reported_not_hidden(tmp_path, smol_tokenizer, monkeypatch) -> None:
    import mechscope.experiments.tour as tour

    def boom(model):
        raise RuntimeError("section exploded")

    monkeypatch.setattr(tour, "CORE", [("model", tour.section_model), ("boom", boom)])
    model = tiny_model("llama", d_vocab=smol_tokenizer.vocab_size, n_ctx=128)
    model.tokenizer = smol_tokenizer
    result = run_tour(tmp_path, model=model, extra=[])
    assert result.failed == ["boom"]
    assert "section exploded" in result.path.read_text()
