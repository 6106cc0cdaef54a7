"""TransformerLens habits run as written: model tokenizer/generate methods, ``run_with_hooks(fwd_hooks=...)``,
``add_hook``/``reset_hooks`` (scoped, with a leak warning), cache convenience methods, ``get_act_name``,
``from_pretrained``."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch

import mechscope
from mechscope.cache.activation_cache import ActivationCache
from mechscope.cache.analysis import accumulated_resid, decompose_resid, logit_attrs, stack_head_results
from mechscope.errors import ConfigError, HookNameError, TokenError
from mechscope.hooks.handles import HookLeakWarning
from mechscope.models.generate import generate
from mechscope.models.transformer import HookedTransformer
from mechscope.tokens import Tokenizer
from mechscope.utils import get_act_name
from tests.helpers import tiny_model
from tests.typecheck import ill_typed

WORDS = [f"w{i}" for i in range(49)]


def model_with_tokenizer() -> HookedTransformer:
    m = tiny_model("gpt2")  # d_vocab 50 = 49 words + BOS
    m.tokenizer = Tokenizer.words(WORDS, bos="<bos>")
    return m


def test_tokenizer_methods_on_the_model() -> None:
    m = model_with_tokenizer()
    toks = m.to_tokens("w1 w2 w3")
    assert toks.tolist() == [[49, 1, 2, 3]]
    assert m.to_str_tokens("w1 w2") == ["<bos>", "w1", "w2"]
    assert m.to_str_tokens(["w1", "w2 w3"]) == [["<bos>", "w1"], ["<bos>", "w2", "w3"]]
    assert m.to_string(toks[0, 1:]).split() == ["w1", "w2", "w3"]
    assert len(m.to_string(torch.tensor([[1, 2], [3, 4]]))) == 2
    assert m.to_single_token("w7") == 7
    bare = tiny_model("gpt2")
    with pytest.raises(TokenError, match="no tokenizer"):
        bare.to_tokens("w1")


def test_generate_on_the_model_matches_the_function() -> None:
    m = model_with_tokenizer()
    ref = generate(m, ["w1 w2"], max_new_tokens=4, stop_at_eos=False)
    text = m.generate("w1 w2", max_new_tokens=4, stop_at_eos=False)
    assert text == "w1 w2" + ref.texts[0] and len(ref.texts[0].split()) >= 1
    toks = m.to_tokens("w1 w2")
    out = m.generate(toks, max_new_tokens=4, stop_at_eos=False)
    assert torch.equal(out, ref.tokens)
    sampled = [m.generate("w1", max_new_tokens=6, do_sample=True, seed=s, stop_at_eos=False) for s in (0, 0, 1)]
    assert sampled[0] == sampled[1]
    with pytest.raises(ConfigError, match="top_k must be >= 1"):
        m.generate("w1", do_sample=True, top_k=0)


def test_run_with_hooks_accepts_transformerlens_names() -> None:
    m = tiny_model("gpt2")
    toks = torch.tensor([[1, 2, 3, 4]])
    zeroed = m.run_with_hooks(toks, fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: x * 0)])
    ours = m.run_with_hooks(toks, fwd=[("blocks.0.hook_resid_post", lambda x, hook: x * 0)])
    assert torch.equal(zeroed, ours) and not torch.equal(zeroed, m(toks))
    grads = {}
    m.run_with_hooks(toks, bwd_hooks=[("blocks.1.hook_resid_pre", lambda g, hook: grads.setdefault("g", g))])
    assert "g" not in grads  # no backward pass ran; the hook was attached and removed
    with m.hooks(bwd_hooks=[("blocks.1.hook_resid_pre", lambda g, hook: grads.setdefault("g", g))]):
        m(toks).sum().backward()
    assert grads["g"].shape == (1, 4, 32)
    with pytest.raises(ConfigError, match="not both"):
        m.run_with_hooks(toks, fwd=[], fwd_hooks=[])
    with pytest.raises(ConfigError, match="reset_hooks_end=False"):
        m.run_with_hooks(toks, reset_hooks_end=False)


def test_add_hook_and_reset_hooks() -> None:
    m = tiny_model("gpt2")
    toks = torch.tensor([[1, 2, 3]])
    clean = m(toks)
    zero = lambda x, hook: x * 0  # noqa: E731
    m.add_hook("blocks.1.hook_resid_pre", zero)
    hooked = m(toks)
    assert not torch.equal(hooked, clean)
    m.reset_hooks()
    assert torch.equal(m(toks), clean)
    with m.add_hook(lambda n: n.endswith("hook_resid_pre"), zero) as h:  # scoped by the with block
        assert len(h.names()) == 2 and not torch.equal(m(toks), clean)
    assert torch.equal(m(toks), clean)
    with m.hooks():  # a non-permanent hook added inside a block leaves with it
        m.add_hook("blocks.1.hook_resid_pre", zero)
        assert not torch.equal(m(toks), clean)
    assert torch.equal(m(toks), clean)
    perm = m.add_hook("blocks.1.hook_resid_pre", zero, is_permanent=True)
    m.reset_hooks()
    assert not torch.equal(m(toks), clean)
    m.reset_hooks(including_permanent=True)
    assert not perm.attached and torch.equal(m(toks), clean)
    with pytest.raises(HookNameError, match="Unknown hook name"):
        m.add_hook("blocks.9.hook_resid_pre", zero)
    with pytest.raises(ConfigError, match="dir must be"), ill_typed():
        m.add_hook("blocks.1.hook_resid_pre", zero, dir="sideways")  # type: ignore[arg-type]


def test_forgotten_add_hook_warns_on_the_second_forward() -> None:
    m = tiny_model("gpt2")
    toks = torch.tensor([[1, 2, 3]])
    m.add_hook("blocks.0.hook_resid_post", lambda x, hook: x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m(toks)  # add_hook -> one forward -> reset_hooks is the habit: no warning
    with pytest.warns(HookLeakWarning, match=r"still attached.*reset_hooks"):
        m(toks)
    m.reset_hooks()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m(toks)
        m(toks)


def test_cache_methods_delegate_to_the_free_functions() -> None:
    m = tiny_model("gpt2")
    toks = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(0))
    _, cache = m.run_with_cache(toks)
    acc, labels = cache.accumulated_resid(return_labels=True)
    ref = accumulated_resid(cache, m.cfg.n_layers)
    assert torch.equal(acc, ref.stack) and labels == ref.labels
    assert torch.equal(cache.accumulated_resid(layer=-1), ref.stack)
    assert torch.equal(cache.decompose_resid(), decompose_resid(cache, m).stack)
    heads, hl = cache.stack_head_results(return_labels=True)
    assert torch.equal(heads, stack_head_results(cache, m).stack) and hl[0] == "L0H0"
    attrs = cache.logit_attrs(heads, tokens=toks[:, 0])
    assert torch.equal(attrs, logit_attrs(heads, cache, m, toks[:, 0]))
    assert cache.to("cpu").decompose_resid().shape == cache.decompose_resid().shape
    loose = ActivationCache(dict(cache))
    with pytest.raises(ConfigError, match="not bound to a model.*model="):
        loose.decompose_resid()
    assert torch.equal(loose.decompose_resid(model=m), cache.decompose_resid())


def test_cache_holds_only_a_weak_reference() -> None:
    m = tiny_model("attn_only")
    _, cache = m.run_with_cache(torch.tensor([[1, 2]]))
    del m
    gc.collect()
    with pytest.raises(ConfigError, match="its model was deleted"):
        cache.decompose_resid()


def test_get_act_name_and_from_pretrained(tmp_path) -> None:
    assert get_act_name("z", 3) == "blocks.3.attn.hook_z"
    assert get_act_name("k6") == "blocks.6.attn.hook_k"
    assert get_act_name("resid_pre", 0) == "blocks.0.hook_resid_pre"
    assert get_act_name("scale", 2, "ln2") == "blocks.2.ln2.hook_scale"
    assert get_act_name("scale4ln1") == "blocks.4.ln1.hook_scale"
    assert get_act_name("blocks.1.hook_mlp_out") == "blocks.1.hook_mlp_out"
    assert mechscope.utils.get_act_name("pattern", 1) == "blocks.1.attn.hook_pattern"
    with pytest.raises(HookNameError, match="Unknown activation shorthand"):
        get_act_name("zz", 1)
    tiny_model("gpt2").save(tmp_path / "m")
    loaded = HookedTransformer.from_pretrained(str(tmp_path / "m"))
    assert isinstance(loaded, HookedTransformer)
    with pytest.raises(ConfigError, match=r"does not take \['fold_ln'\]"):
        HookedTransformer.from_pretrained(str(tmp_path / "m"), fold_ln=True)
