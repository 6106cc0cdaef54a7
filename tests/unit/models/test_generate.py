"""Generation: KV cache equals full re-forward, padded batches equal single prompts, hooks fire each step."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import ConfigError, TokenError
from mechscope.models.generate import generate
from mechscope.tokens import Tokenizer
from tests.helpers import tiny_model


@pytest.mark.parametrize("kind", ["llama", "gpt2", "neox", "shortformer"])
def test_kv_cache_matches_full_forward(kind: str) -> None:
    model = tiny_model(kind)
    prompt = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(0))
    a = generate(model, prompt, max_new_tokens=8, use_kv_cache=True, stop_at_eos=False)
    b = generate(model, prompt, max_new_tokens=8, use_kv_cache=False, stop_at_eos=False)
    assert torch.equal(a.tokens, b.tokens)
    assert a.tokens.shape == (2, 13)


def test_padded_batch_generates_what_each_prompt_generates_alone() -> None:
    model = tiny_model("llama", d_vocab=27)
    model.tokenizer = Tokenizer.chars("abcdefghijklmnopqrstuvwxyz ", bos=None)
    prompts = ["hello world", "abc"]
    batch = generate(model, prompts, max_new_tokens=6, stop_at_eos=False)
    for i, p in enumerate(prompts):
        alone = generate(model, [p], max_new_tokens=6, stop_at_eos=False)
        assert batch.texts[i] == alone.texts[0]


def test_hooks_are_active_at_every_step() -> None:
    model = tiny_model("llama")
    calls: list[int] = []
    with model.hooks(fwd=[("blocks.0.hook_resid_post", lambda x, h: calls.append(x.shape[1]))]):
        generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=4, stop_at_eos=False)
    assert calls == [3, 1, 1, 1]
    # a steering hook changes what is generated
    plain = generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=4, stop_at_eos=False).tokens
    vec = torch.randn(32, generator=torch.Generator().manual_seed(3)) * 20
    with model.hooks(fwd=[("blocks.1.hook_resid_post", lambda x, h: x + vec)]):
        steered = generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=4, stop_at_eos=False).tokens
    assert not torch.equal(plain, steered)


def test_sampling_is_seeded_and_bad_arguments_are_clear() -> None:
    model = tiny_model("gpt2")
    p = torch.tensor([[4, 5]])
    a = generate(model, p, max_new_tokens=6, temperature=1.0, top_k=10, seed=1, stop_at_eos=False).tokens
    b = generate(model, p, max_new_tokens=6, temperature=1.0, top_k=10, seed=1, stop_at_eos=False).tokens
    assert torch.equal(a, b)
    c = generate(model, p, max_new_tokens=6, temperature=1.0, top_p=0.9, seed=2, stop_at_eos=False).tokens
    assert c.shape == (1, 8)
    with pytest.raises(ConfigError):
        generate(model, p, temperature=-1.0)
    with pytest.raises(TokenError, match="exceeds n_ctx"):
        generate(model, p, max_new_tokens=40)
