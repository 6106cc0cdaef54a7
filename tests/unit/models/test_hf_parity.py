"""Our models equal transformers on tiny random configs of every supported family (logits and hooks)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from mechscope.models.loading import from_hf  # noqa: E402
from mechscope.models.parity import compare_to_hf  # noqa: E402


def _gpt2() -> object:
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=97)
    return transformers.GPT2LMHeadModel(cfg)


def _neox(parallel: bool) -> object:
    cfg = transformers.GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, vocab_size=97, max_position_embeddings=64,
                                     use_parallel_residual=parallel)
    return transformers.GPTNeoXForCausalLM(cfg)


def _llama(tied: bool) -> object:
    cfg = transformers.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=48, vocab_size=97, max_position_embeddings=64,
                                   tie_word_embeddings=tied)
    return transformers.LlamaForCausalLM(cfg)


def _qwen2() -> object:
    cfg = transformers.Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=48, vocab_size=97, max_position_embeddings=64)
    return transformers.Qwen2ForCausalLM(cfg)


def _mistral() -> object:
    cfg = transformers.MistralConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                                     intermediate_size=48, vocab_size=97, max_position_embeddings=64, sliding_window=32)
    return transformers.MistralForCausalLM(cfg)


FAMILIES = {"gpt2": _gpt2, "neox-parallel": lambda: _neox(True), "neox-sequential": lambda: _neox(False),
            "llama-untied": lambda: _llama(False), "llama-tied": lambda: _llama(True), "qwen2": _qwen2,
            "mistral": _mistral}


def _randomise(hf: torch.nn.Module) -> None:
    # HF inits norms to 1 and biases to 0, which would hide conversion bugs in them
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _name, p in hf.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("family", list(FAMILIES), ids=list(FAMILIES))
def test_logits_and_every_shared_hook_match(family: str) -> None:
    torch.manual_seed(0)
    hf = FAMILIES[family]().eval()
    _randomise(hf)
    model = from_hf(hf)
    tokens = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(1))
    report = compare_to_hf(model, hf, tokens)
    assert report.logits_max_abs <= 1e-4, report.to_dict()
    assert len(report.hooks) >= 6 * 2, f"too few activations compared: {sorted(report.hooks)}"
    name, worst = report.worst_hook
    assert worst <= 1e-4, f"{name}: {worst}"


def test_hf_model_is_not_modified() -> None:
    hf = _llama(False).eval()
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    from_hf(hf)
    after = hf.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_from_local_directory_and_verify_certificate(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from mechscope.cli.main import app

    hf = _llama(False).eval()
    _randomise(hf)
    hf.save_pretrained(tmp_path)
    model = from_hf(tmp_path)
    tokens = torch.randint(0, 97, (1, 8))
    with torch.no_grad():
        assert (model(tokens) - hf(tokens).logits).abs().max() <= 1e-4
    res = CliRunner().invoke(app, ["verify", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["verdict"] == "PASS"
    assert [r["dtype"] for r in report["results"]] == ["float32", "bfloat16"]
    assert report["results"][0]["n_hooks_compared"] == 2 * 10
