"""The embedded SmolLM2 from its GGUF equals transformers' own GGUF loading of the same file."""

from __future__ import annotations

import pytest
import torch

from mechscope.models.parity import compare_to_hf

pytestmark = pytest.mark.model


def test_logits_and_activations_equal_transformers_gguf(smollm2, hf_smollm2_gguf) -> None:
    tokens = smollm2.tokenizer.to_tokens(["When Mary and John went to the store, John gave a drink to",
                                          "def fibonacci(n):\n    if n <= 1:\n        return n"])[:, :12]
    report = compare_to_hf(smollm2, hf_smollm2_gguf, tokens)
    assert report.logits_max_abs <= 1e-3, report.to_dict()
    assert len(report.hooks) == 30 * 10
    name, worst = report.worst_hook_rel  # relative: activations reach ~2e4, beyond any fixed float32 bound
    assert worst <= 1e-5, (name, worst, report.hook_scales[name])


def test_parameter_count_matches_the_source_model(smollm2) -> None:
    assert smollm2.n_params() == 134_515_008  # tied embedding counted once, as in transformers


def test_real_model_knows_paris_and_does_ioi(smollm2) -> None:
    tok = smollm2.tokenizer
    with torch.no_grad():
        logits = smollm2(tok.to_tokens("The Eiffel Tower is in the city of"))[0, -1]
        assert int(logits.argmax()) == tok.to_single_token(" Paris")
        ioi = smollm2(tok.to_tokens("When Mary and John went to the store, John gave a drink to"))[0, -1]
    diff = float(ioi[tok.to_single_token(" Mary")] - ioi[tok.to_single_token(" John")])
    assert diff > 3.0
