"""splice: spliced hook points are real (cache, hooks, interventions), appear and disappear with the
context, the error term makes the model exact, and mismatches raise clear errors."""

from __future__ import annotations

import pytest
import torch

from mechscope.dictionaries.relu import ReLUConfig, ReLUDictionary
from mechscope.dictionaries.splice import LOCAL_NAMES, splice
from mechscope.dictionaries.topk import TopKConfig, TopKDictionary
from mechscope.dictionaries.transcoder import Transcoder, TranscoderConfig
from mechscope.errors import ConfigError, HookNameError, ShapeError
from mechscope.models.transformer import HookedTransformer
from tests.conftest import tiny_cfg

H = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return HookedTransformer(tiny_cfg("llama"), seed=0).eval()


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, 50, (3, 10), generator=torch.Generator().manual_seed(0))


def _sae(hook: str | None = H, d_in: int = 32, k: int = 4, seed: int = 0) -> TopKDictionary:
    sae = TopKDictionary(TopKConfig(d_in=d_in, d_sae=64, k=k, hook_name=hook, seed=seed))
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed + 1))
    return sae


def test_points_appear_and_disappear(model: HookedTransformer, tokens: torch.Tensor) -> None:
    before = set(model.hook_dict)
    sae = _sae()
    with splice(model, sae, H) as s:
        added = set(model.hook_dict) - before
        assert added == {f"{H}.{n}" for n in LOCAL_NAMES if n != "hook_sae_error"}
        assert model.hook_dict[s["acts_post"]] is sae.hook_sae_acts_post
        assert sae.hook_sae_acts_post.name == f"{H}.hook_sae_acts_post"
    assert set(model.hook_dict) == before
    assert sae.hook_sae_acts_post.name == "hook_sae_acts_post"  # names restored
    with splice(model, sae, H, use_error_term=True):
        assert f"{H}.hook_sae_error" in model.hook_dict
    with pytest.raises(HookNameError, match="hook_sae_acts_post"):
        model.hook_names([f"{H}.hook_sae_acts_post"])


def test_cache_matches_independent_computation(model: HookedTransformer, tokens: torch.Tensor) -> None:
    sae = _sae()
    _, clean = model.run_with_cache(tokens, names=[H, "blocks.1.hook_resid_pre"])
    with splice(model, sae, H) as s:
        logits, cache = model.run_with_cache(tokens, names=lambda n: n.startswith(H))
    x = clean[H]
    want = sae(x)
    torch.testing.assert_close(cache[s["input"]], x)
    torch.testing.assert_close(cache[s["acts_post"]], want.acts)
    torch.testing.assert_close(cache[s["recons"]], want.recons)
    torch.testing.assert_close(cache[s["output"]], want.recons)
    assert cache[H].shape == x.shape  # H itself still cached: it is the spliced value (registered after)
    torch.testing.assert_close(cache[H], want.recons)
    # the rest of the model reads the reconstruction: same logits as patching it in by hand
    with model.hooks(fwd=[(H, lambda a, hook: want.recons)]):
        torch.testing.assert_close(logits, model(tokens))
    assert (logits - model(tokens)).abs().max() > 1e-4  # and the splice did change them


def test_error_term_exact_and_edits(model: HookedTransformer, tokens: torch.Tensor) -> None:
    sae = _sae()
    clean = model(tokens)
    with splice(model, sae, H, use_error_term=True) as s:
        assert torch.equal(model(tokens), clean)  # bit for bit
        _, cache = model.run_with_cache(tokens, names=[s["input"], s["recons"], s["error"]])
        torch.testing.assert_close(cache[s["error"]], cache[s["input"]] - cache[s["recons"]])
        # ablating latent j changes the output by exactly -acts_j * W_dec[j]
        acts = sae(cache[s["input"]]).acts
        j = int(acts.reshape(-1, 64).ne(0).sum(0).argmax())
        got: dict[str, torch.Tensor] = {}

        def ablate(a: torch.Tensor, hook: object) -> torch.Tensor:
            a = a.clone()
            a[..., j] = 0
            return a

        with model.hooks(fwd=[(s["acts_post"], ablate), (s["output"], lambda o, hook: got.setdefault("o", o))]):
            edited = model(tokens)
        torch.testing.assert_close(got["o"], cache[s["input"]] - acts[..., j:j + 1] * sae.W_dec[j], atol=1e-5, rtol=0)
        assert not torch.allclose(edited, clean)
        # zeroing the error term gives the plain spliced output
        with model.hooks(fwd=[(s["error"], lambda e, hook: torch.zeros_like(e))]):
            no_err = model(tokens)
    with splice(model, sae, H):
        torch.testing.assert_close(no_err, model(tokens), atol=1e-5, rtol=1e-5)


def test_gradients_flow_through_latents(model: HookedTransformer, tokens: torch.Tensor) -> None:
    sae = _sae()
    with splice(model, sae, H, use_error_term=True) as s:
        _, cache = model.run_with_cache(tokens, names=[s["acts_post"]], grad_of=lambda lg: lg[:, -1, 0].sum())
    g = cache[s["acts_post"] + "_grad"]
    assert g.shape == (3, 10, 64) and g.abs().sum() > 0


def test_hook_z_is_flattened() -> None:
    model = HookedTransformer(tiny_cfg("gpt2"), seed=0)
    hook = "blocks.1.attn.hook_z"  # [batch pos 4 8] -> d_in 32
    sae = _sae(hook=hook)
    toks = torch.randint(0, 50, (2, 6))
    _, clean = model.run_with_cache(toks, names=[hook])
    with splice(model, sae, hook) as s:
        _, cache = model.run_with_cache(toks, names=[hook, s["input"]])
    torch.testing.assert_close(cache[s["input"]], clean[hook].reshape(2, 6, 32))
    torch.testing.assert_close(cache[hook], sae(clean[hook].reshape(2, 6, 32)).recons.reshape(2, 6, 4, 8))


def test_nested_splices_and_errors(model: HookedTransformer, tokens: torch.Tensor) -> None:
    a, b = _sae(), _sae(hook="blocks.1.hook_resid_post", seed=3)
    with splice(model, a, H), splice(model, b, "blocks.1.hook_resid_post"):
        assert f"{H}.hook_sae_acts_post" in model.hook_dict
        assert "blocks.1.hook_resid_post.hook_sae_acts_post" in model.hook_dict
        with pytest.raises(HookNameError, match="already"), splice(model, _sae(), H):
            pass
    with pytest.raises(ShapeError, match="d_in=16"), splice(model, _sae(d_in=16), H):
        pass
    with pytest.raises(ConfigError, match="trained on 'blocks.1.hook_resid_post'"), splice(model, b, H):
        pass
    with splice(model, b, H, check_hook_name=False):  # on purpose
        model(tokens)
    with pytest.raises(HookNameError, match="Did you mean"), splice(model, _sae(hook=None), "blocks.0.hook_resid_pots"):
        pass
    tc = Transcoder(TranscoderConfig(d_in=32, d_sae=64, d_out=32))
    with pytest.raises(ConfigError, match="target_hook"), splice(model, tc, H):  # no target hook known
        pass
    assert not any("sae" in n for n in model.hook_dict)


def test_perfect_relu_dictionary_reconstructs_exactly(model: HookedTransformer, tokens: torch.Tensor) -> None:
    """W_enc = [I, -I], W_dec = [I; -I]: relu(x) - relu(-x) = x, so the spliced model is the clean one."""
    from tests.unit.dictionaries.test_evals import perfect_relu

    sae = perfect_relu(32, H)
    clean = model(tokens)
    with splice(model, sae, H):
        torch.testing.assert_close(model(tokens), clean, atol=1e-6, rtol=0)
    assert isinstance(sae, ReLUDictionary) and isinstance(sae.cfg, ReLUConfig)


def test_steering_adds_the_decoder_row_and_clamping_matches(model: HookedTransformer, tokens: torch.Tensor) -> None:
    from mechscope.dictionaries.steering import clamp_latent, steer

    sae = _sae()
    _, clean = model.run_with_cache(tokens, names=[H])
    got: dict[str, torch.Tensor] = {}
    with steer(model, sae, latent=5, scale=3.0, positions=[2]), \
            model.hooks(fwd=[(H, lambda a, hook: got.setdefault("a", a))]):
        model(tokens)
    delta = got["a"] - clean[H]
    torch.testing.assert_close(delta[:, 2], (3.0 * sae.W_dec[5]).expand(3, 32).detach())
    assert delta[:, [0, 1, 3]].abs().max() == 0
    # clamping latent 5 to c with the error term = adding (c - acts_5) * W_dec[5] per position
    acts5 = sae(clean[H]).acts[..., 5]
    with splice(model, sae, H, use_error_term=True) as s, clamp_latent(model, s, 5, 2.0), \
            model.hooks(fwd=[(s["output"], lambda o, hook: got.setdefault("o", o))]):
        model(tokens)
    want = clean[H] + (2.0 - acts5)[..., None] * sae.W_dec[5]
    torch.testing.assert_close(got["o"], want.detach(), atol=1e-5, rtol=0)


def test_steering_a_transcoder_adds_at_its_target_hook() -> None:
    """A transcoder latent writes to the target hook, so steering adds its decoder row there, not at the input."""
    from mechscope.dictionaries.steering import steering_spec
    from mechscope.dictionaries.transcoder import Transcoder, TranscoderConfig

    tc = Transcoder(TranscoderConfig(d_in=8, d_sae=16, d_out=8, hook_name="blocks.0.hook_mlp_in",
                                               target_hook_name="blocks.0.hook_mlp_out"))
    spec = steering_spec(tc, 3, 2.0)
    assert spec.hook == "blocks.0.hook_mlp_out"
    torch.testing.assert_close(spec.vector, tc.W_dec[3].detach())
    assert steering_spec(tc, 3, 2.0, hook="blocks.0.hook_resid_mid").hook == "blocks.0.hook_resid_mid"
