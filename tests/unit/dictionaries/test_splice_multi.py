"""Splicing transcoders (read one hook, replace another) and crosscoders (read and write several layers,
two passes): each spliced model equals an independent computation (cache the clean activations, run the
dictionary by hand, patch its output in with plain hooks); exact copies recover 100% of the CE loss; the
error term reproduces the clean logits; mismatches raise clear errors."""

from __future__ import annotations

import pytest
import torch

from mechscope.dictionaries.crosscoder import Crosscoder, CrosscoderConfig
from mechscope.dictionaries.evals import EvalConfig, evaluate, evaluate_many
from mechscope.dictionaries.splice import splice
from mechscope.dictionaries.steering import clamp_latent
from mechscope.dictionaries.transcoder import Transcoder, TranscoderConfig
from mechscope.errors import ConfigError, HookNameError, ShapeError
from mechscope.models.config import MLPConfig
from mechscope.models.transformer import HookedTransformer
from tests.helpers import tiny_model
from tests.unit.dictionaries.test_evals import perfect_relu

L = 1
T_IN, T_OUT = f"blocks.{L}.ln2.hook_normalized", f"blocks.{L}.hook_mlp_out"
CC_HOOKS = ("blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out", "blocks.2.hook_mlp_out")


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    """3-layer GPT-2-shaped model (LayerNorm with random affine), ReLU MLPs with biases, confident W_U."""
    m = tiny_model("gpt2", seed=3, n_layers=3, mlp=MLPConfig(d_mlp=64, act="relu", bias=True))
    with torch.no_grad():
        m.unembed.W_U.mul_(4.0)
    return m


@pytest.fixture(scope="module")
def tokens(model: HookedTransformer) -> torch.Tensor:
    """Text the model itself finds likely (so the MLPs matter for the loss)."""
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 50, (4, 1), generator=g)
    with torch.no_grad():
        for _ in range(9):
            t = torch.cat([t, torch.multinomial((model(t)[:, -1] / 0.5).softmax(-1), 1, generator=g)], dim=1)
    return t


def copy_transcoder(model: HookedTransformer, layer: int = L) -> Transcoder:
    """A ReLU transcoder equal to block ``layer``'s MLP read from ``ln2.hook_normalized`` (before the LN
    affine ``n * w + b``): W_enc = diag(w) W_in, b_enc = b W_in + b_in, W_dec = W_out, b_dec = b_out."""
    block = model.blocks[layer]
    mlp, ln = block.mlp, block.ln2
    tc = Transcoder(TranscoderConfig(d_in=32, d_sae=64, d_out=32, hook_name=f"blocks.{layer}.ln2.hook_normalized",
                                     target_hook_name=f"blocks.{layer}.hook_mlp_out"))
    with torch.no_grad():
        tc.W_enc.copy_(ln.w[:, None] * mlp.W_in)
        tc.b_enc.copy_(ln.b @ mlp.W_in + mlp.b_in)
        tc.W_dec.copy_(mlp.W_out)
        tc.b_dec.copy_(mlp.b_out)
    return tc


def random_transcoder(hook: str = T_IN, target: str = T_OUT, skip: bool = True) -> Transcoder:
    tc = Transcoder(TranscoderConfig(d_in=32, d_sae=48, d_out=32, hook_name=hook, target_hook_name=target,
                                     skip=skip, k=6, seed=2))
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        tc.b_dec.normal_(0, 0.2, generator=g)
        if skip:
            tc.W_skip.normal_(0, 0.1, generator=g)
    return tc


def perfect_crosscoder(hooks: tuple[str, ...], d: int = 32) -> Crosscoder:
    """relu(x) - relu(-x) = x on the flattened (n_layers d_in) axis: reconstructs every layer exactly."""
    n = len(hooks)
    cc = Crosscoder(CrosscoderConfig(d_in=d, d_sae=2 * n * d, n_layers=n, hook_names=hooks))
    eye = torch.eye(n * d)
    with torch.no_grad():
        cc.W_enc.copy_(torch.cat([eye, -eye], dim=1).view(n, d, 2 * n * d))
        cc.W_dec.copy_(torch.cat([eye, -eye], dim=0).view(2 * n * d, n, d))
        cc.b_enc.zero_()
        cc.b_dec.zero_()
    return cc


def random_crosscoder(hooks: tuple[str, ...] = CC_HOOKS) -> Crosscoder:
    cc = Crosscoder(CrosscoderConfig(d_in=32, d_sae=40, n_layers=len(hooks), hook_names=hooks, seed=7,
                                     decoder_init_norm=0.5))
    with torch.no_grad():
        cc.b_enc.fill_(0.05)
    return cc


def patched(model: HookedTransformer, tokens: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits with each hook's activation replaced by a given tensor (plain hooks, the reference)."""
    with model.hooks(fwd=[(h, lambda a, hook, v=v: v) for h, v in values.items()]):
        return model(tokens)


# -- transcoders ----------------------------------------------------------------------------------------
@torch.no_grad()
def test_copy_transcoder_replaces_the_mlp_exactly(model: HookedTransformer, tokens: torch.Tensor) -> None:
    tc = copy_transcoder(model)
    clean_logits, clean = model.run_with_cache(tokens, names=[T_IN, T_OUT])
    torch.testing.assert_close(tc(clean[T_IN]).recons, clean[T_OUT], atol=1e-5, rtol=0)  # it is the MLP
    with splice(model, tc) as s:
        assert s.hook == T_OUT and s.sites.reads == (T_IN,) and s.sites.writes == (T_OUT,)
        logits, cache = model.run_with_cache(tokens, names=[s["input"], s["recons"], s["output"], T_OUT])
    torch.testing.assert_close(cache[s["input"]], clean[T_IN])
    torch.testing.assert_close(cache[T_OUT], cache[s["recons"]])  # the target hook now holds the prediction
    torch.testing.assert_close(logits, clean_logits, atol=1e-5, rtol=0)
    res = evaluate(model, tc, tokens, cfg=EvalConfig(batch_size=3))
    assert res.ce_loss_zero > res.ce_loss_clean + 0.01  # zero-ablating the MLP output hurts
    assert res.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert res.fvu == pytest.approx(0.0, abs=1e-9) and res.kl == pytest.approx(0.0, abs=1e-6)
    assert res.reads == (T_IN,) and res.writes == (T_OUT,)


@torch.no_grad()
def test_random_transcoder_equals_independent_patch(model: HookedTransformer, tokens: torch.Tensor) -> None:
    tc = random_transcoder()
    clean_logits, clean = model.run_with_cache(tokens, names=[T_IN, T_OUT])
    want = tc(clean[T_IN]).recons
    with splice(model, tc) as s:
        logits, cache = model.run_with_cache(tokens, names=[T_OUT, s["acts_post"]])
    torch.testing.assert_close(cache[T_OUT], want)
    assert (cache[s["acts_post"]] != 0).sum(-1).max() <= 6
    torch.testing.assert_close(logits, patched(model, tokens, {T_OUT: want}))
    assert (logits - clean_logits).abs().max() > 1e-2  # a random transcoder does change the model
    # evals: every figure against the hand computation (positions 1.. spliced and scored)
    res = evaluate(model, tc, tokens, cfg=EvalConfig(batch_size=4))
    keep = torch.ones(tokens.shape, dtype=torch.bool)
    keep[:, 0] = False
    spl = patched(model, tokens, {T_OUT: torch.where(keep[..., None], want, clean[T_OUT])})
    zero = patched(model, tokens, {T_OUT: torch.where(keep[..., None], 0.0, clean[T_OUT])})

    def ce(lg: torch.Tensor) -> float:
        return float(torch.nn.functional.cross_entropy(lg[:, 1:-1].reshape(-1, 50), tokens[:, 2:].reshape(-1)))

    c, z, sp = ce(clean_logits), ce(zero), ce(spl)
    assert res.ce_loss_recovered == pytest.approx((z - sp) / (z - c), rel=1e-4)
    y, r = clean[T_OUT][keep].double(), want[keep].double()
    assert res.fvu == pytest.approx(float((y - r).pow(2).sum() / (y - y.mean(0)).pow(2).sum()), rel=1e-6)


@torch.no_grad()
def test_transcoder_error_term_reproduces_clean_logits(model: HookedTransformer, tokens: torch.Tensor) -> None:
    clean = model(tokens)
    tc = random_transcoder()
    with splice(model, tc, use_error_term=True) as s:
        assert s["error"] == f"{T_OUT}.hook_sae_error"
        torch.testing.assert_close(model(tokens), clean, atol=1e-5, rtol=0)  # LN un-fused when hooked: ~1e-7
    exact = random_transcoder(f"blocks.{L}.hook_mlp_in", T_OUT, skip=False)
    # bit for bit against the same forward path (a hooked point may skip a fused residual add)
    noop = [(h, lambda a, hook: a) for h in (f"blocks.{L}.hook_mlp_in", T_OUT)]
    with model.hooks(fwd=noop):
        clean_hooked = model(tokens)
    with splice(model, exact, use_error_term=True) as s:
        out = model(tokens)
        assert torch.equal(out, clean_hooked)
        torch.testing.assert_close(out, clean, atol=1e-5, rtol=0)
        # ablating latent j changes the MLP output by exactly -acts_j W_dec[j]
        _, cache = model.run_with_cache(tokens, names=[s["acts_post"]])
        acts = cache[s["acts_post"]]
        j = int(acts.ne(0).sum((0, 1)).argmax())
        _, base = model.run_with_cache(tokens, names=[T_OUT])
        with clamp_latent(model, s, j, 0.0):
            _, edited = model.run_with_cache(tokens, names=[T_OUT])
    torch.testing.assert_close(edited[T_OUT] - base[T_OUT], -acts[..., j, None] * exact.W_dec[j], atol=1e-5, rtol=0)


def test_transcoder_errors(model: HookedTransformer, tokens: torch.Tensor) -> None:
    with pytest.raises(ShapeError, match=r"d_out=16 .*must be one of \[32\]"), \
            splice(model, Transcoder(TranscoderConfig(d_in=32, d_sae=8, d_out=16, hook_name=T_IN,
                                                      target_hook_name=T_OUT))):
        pass
    with pytest.raises(ShapeError, match=r"d_in=32.*must be one of \[64\]"), \
            splice(model, random_transcoder(), "blocks.1.mlp.hook_post", check_hook_name=False):
        pass
    with pytest.raises(ConfigError, match="trained on 'blocks.1.hook_mlp_out' \\(target_hook_name\\)"), \
            splice(model, random_transcoder(), target_hook="blocks.2.hook_mlp_out"):
        pass
    with pytest.raises(ConfigError, match="comes after"), \
            splice(model, random_transcoder("blocks.2.hook_mlp_in", "blocks.0.hook_mlp_out")):
        pass
    with pytest.raises(HookNameError, match="Did you mean"), splice(model, random_transcoder(T_IN, "blocks.1.hook_mlp_outt")):
        pass
    # same layer, wrong order: detected when the target hook runs first
    backwards = random_transcoder(f"blocks.{L}.hook_mlp_out", f"blocks.{L}.hook_mlp_in", skip=False)
    with pytest.raises(ConfigError, match="ran before its input hook"), splice(model, backwards), torch.no_grad():
        model(tokens)
    with pytest.raises(ConfigError, match="target_hook does not apply"), \
            splice(model, perfect_crosscoder(("blocks.0.hook_mlp_out",)), target_hook=T_OUT):
        pass
    with pytest.raises(ConfigError, match="target_hook applies only to transcoders"), \
            splice(model, perfect_relu(32, T_OUT), target_hook=T_OUT):
        pass
    assert not any("sae" in n for n in model.hook_dict)


# -- crosscoders ----------------------------------------------------------------------------------------
@torch.no_grad()
def test_crosscoder_writes_every_layer_from_clean_inputs(model: HookedTransformer, tokens: torch.Tensor) -> None:
    cc = random_crosscoder()
    clean_logits, clean = model.run_with_cache(tokens, names=list(CC_HOOKS))
    x = torch.stack([clean[h] for h in CC_HOOKS], dim=-2)  # [batch pos 3 d_model], clean inputs
    want = cc(x).recons
    with splice(model, cc) as s:
        assert s.hook == CC_HOOKS[0] and all(s.at(h, "output") in model.hook_dict for h in CC_HOOKS)
        logits, cache = model.run_with_cache(tokens, names=[*CC_HOOKS, s["input"], s["recons"]])
    torch.testing.assert_close(cache[s["input"]], x)
    torch.testing.assert_close(cache[s["recons"]], want)
    for i, h in enumerate(CC_HOOKS):
        torch.testing.assert_close(cache[h], want[..., i, :])
        assert (cache[h] - clean[h]).abs().max() > 1e-2  # every covered layer changed
    torch.testing.assert_close(logits, patched(model, tokens, {h: want[..., i, :] for i, h in enumerate(CC_HOOKS)}))
    assert (logits - clean_logits).abs().max() > 1e-2


@torch.no_grad()
def test_perfect_crosscoder_recovers_all_loss(model: HookedTransformer, tokens: torch.Tensor) -> None:
    cc = perfect_crosscoder(CC_HOOKS)
    rand = random_crosscoder()
    res, res_rand = evaluate_many(model, [cc, rand], tokens, cfg=EvalConfig(batch_size=3))
    assert res.ce_loss_zero > res.ce_loss_clean + 0.01
    assert res.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert res.fvu == pytest.approx(0.0, abs=1e-9) and res.kl == pytest.approx(0.0, abs=1e-6)
    assert res.writes == CC_HOOKS and res.n_tokens == 4 * 9
    assert res_rand.ce_loss_recovered < 0.99 and res_rand.fvu > 0.01
    assert res_rand.ce_loss_zero == res.ce_loss_zero  # the shared zero-ablation of all three layers


@torch.no_grad()
def test_crosscoder_error_term_and_latent_edits(model: HookedTransformer, tokens: torch.Tensor) -> None:
    cc = random_crosscoder()
    clean_logits, clean = model.run_with_cache(tokens, names=list(CC_HOOKS))  # same (hooked) forward path
    unhooked = model(tokens)
    with splice(model, cc, use_error_term=True) as s:
        out = model(tokens)
        assert torch.equal(out, clean_logits)
        torch.testing.assert_close(out, unhooked, atol=1e-5, rtol=0)
        _, cache = model.run_with_cache(tokens, names=[s["acts_post"]])
        acts = cache[s["acts_post"]]
        j = int(acts.ne(0).sum((0, 1)).argmax())
        with clamp_latent(model, s, j, 0.0):
            _, edited = model.run_with_cache(tokens, names=list(CC_HOOKS))
    for i, h in enumerate(CC_HOOKS):  # each layer = its clean activation + the latent's change at that layer
        torch.testing.assert_close(edited[h] - clean[h], -acts[..., j, None] * cc.W_dec[j, i], atol=1e-5, rtol=0)


def test_crosscoder_passes_and_gradients(model: HookedTransformer, tokens: torch.Tensor) -> None:
    hooks = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
    cc = random_crosscoder(hooks)
    calls = {"outer": 0, "inner": 0}

    def count(key: str) -> object:
        def fn(x: torch.Tensor, hook: object) -> None:
            calls[key] += 1
        return fn

    with model.hooks(fwd=[("blocks.2.hook_resid_pre", count("outer"))]), splice(model, cc) as s, \
            model.hooks(fwd=[("blocks.0.hook_resid_pre", count("inner"))]):
        with torch.no_grad():
            model(tokens)
        # the collection pass stops after block 1 (the outer hook at block 2 runs once), inner hooks run once
        assert calls == {"outer": 1, "inner": 1}
        _, cache = model.run_with_cache(tokens, names=[s["acts_post"]], grad_of=lambda lg: lg[:, -1, 0].sum())
    assert cache[s["acts_post"] + "_grad"].abs().sum() > 0


def test_crosscoder_errors(model: HookedTransformer, tokens: torch.Tensor) -> None:
    from mechscope.models.components.attention import KVCache

    cc = random_crosscoder()
    with pytest.raises(ConfigError, match="3 distinct hooks"), splice(model, cc, list(CC_HOOKS[:2])):
        pass
    with pytest.raises(ConfigError, match="hook_names"), splice(model, cc, list(CC_HOOKS[::-1])):
        pass
    with pytest.raises(ShapeError, match=r"d_in=32.*must be one of \[64\]"), \
            splice(model, cc, ["blocks.0.mlp.hook_post", *CC_HOOKS[1:]], check_hook_name=False):
        pass
    narrow = Crosscoder(CrosscoderConfig(d_in=16, d_sae=8, n_layers=3))
    with pytest.raises(ShapeError, match="d_in=16"), splice(model, narrow, list(CC_HOOKS)):
        pass
    with pytest.raises(ConfigError, match="names no hook_names"), splice(model, narrow):
        pass
    with splice(model, cc), torch.no_grad():
        with pytest.raises(ConfigError, match="KV cache"):
            model(tokens, past_kv=KVCache(3))
        with pytest.raises(ConfigError, match="never reached"):
            model(tokens, stop_at_layer=1)
        with pytest.raises(ConfigError, match="without a collection pass"):
            model.run_blocks(model.embed(tokens), 0)
    assert not any("sae" in n for n in model.hook_dict)


def test_transcoder_across_blocks_and_stale_inputs(model: HookedTransformer, tokens: torch.Tensor) -> None:
    """Reading block 0's residual to predict block 1's MLP output works; an input recorded by a call that
    stopped before the target is not reused by a later ``run_blocks`` (which raises instead)."""
    tc = random_transcoder("blocks.0.hook_resid_post", T_OUT, skip=True)
    with torch.no_grad():
        _, clean = model.run_with_cache(tokens, names=["blocks.0.hook_resid_post"])
        want = patched(model, tokens, {T_OUT: tc(clean["blocks.0.hook_resid_post"]).recons})
        with splice(model, tc):
            torch.testing.assert_close(model(tokens), want)
            resid = model(tokens, stop_at_layer=1)  # records the input, stops before the target
            with pytest.raises(ConfigError, match="ran before its input hook"):
                model.run_blocks(resid, 1)
