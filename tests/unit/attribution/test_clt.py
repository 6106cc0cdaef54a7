"""Cross-layer transcoders: the forward is its formula, training/saving work, the full replacement is exact."""

from __future__ import annotations

import pytest
import torch

from mechscope.dictionaries import io
from mechscope.dictionaries.clt import CLTConfig, CrossLayerTranscoder
from mechscope.dictionaries.replacement import replacement
from mechscope.dictionaries.train import Trainer, TrainerConfig
from mechscope.dictionaries.transcoder import Transcoder, TranscoderConfig
from mechscope.errors import ConfigError, ShapeError
from tests.conftest import tiny_model
from tests.typecheck import ill_typed


def _clt(n=3, d=6, k=None, skip=True, seed=0, **kw):
    clt = CrossLayerTranscoder(CLTConfig(d_in=d, d_out=d, d_sae=5, n_layers=n, skip=skip, k=k, seed=seed,
                                         dtype="float64", **kw))
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return clt


@pytest.mark.parametrize("k", [None, 2])
def test_clt_forward_equals_its_formula(k):
    clt = _clt(k=k).with_config(input_scale=1.5, output_scale=2.0)
    x = torch.randn(4, 3, 6, dtype=torch.float64)
    out = clt(x)
    n = 3
    acts = []
    for s in range(n):
        pre = (1.5 * x[:, s]) @ clt.W_enc[s] + clt.b_enc[s]
        if k is not None:
            top = pre.topk(k, -1).indices
            pre = torch.zeros_like(pre).scatter(-1, top, pre.gather(-1, top))
        acts.append(pre.relu())
    pair = {(s, t): i for i, (s, t) in enumerate((s, t) for s in range(n) for t in range(s, n))}
    for t in range(n):
        want = clt.b_dec[t] + (1.5 * x[:, t]) @ clt.W_skip[t]
        for s in range(t + 1):
            want = want + acts[s] @ clt.W_dec[pair[(s, t)]]
        assert torch.allclose(out.recons[:, t], want / 2.0, atol=1e-12)
        assert torch.allclose(out.acts[:, t], acts[t], atol=1e-12)
    # decoder_vectors: what a layer-1 feature writes, zero before layer 1
    dv = clt.decoder_vectors(1)
    assert dv[:, 0].abs().max() == 0 and torch.allclose(dv[:, 2], clt.W_dec[pair[(1, 2)]] / 2.0)


def test_clt_trains_saves_and_loads(tmp_path):
    clt = CrossLayerTranscoder(CLTConfig(d_in=6, d_out=6, d_sae=8, n_layers=3, l1_coefficient=1e-3))
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 6, 6, generator=g)
    batches = []
    for _ in range(60):
        x = torch.randn(64, 3, 6, generator=g)
        batches.append((x, torch.einsum("bld,lde->ble", x, w).relu()))
    trainer = Trainer(clt, TrainerConfig(total_steps=60, lr=1e-2, progress=False, log_every=20,
                                         out_dir=str(tmp_path / "run")))
    trainer.fit(batches)
    ev = [r["explained_variance"] for r in trainer.history]
    assert ev[-1] > ev[0] and ev[-1] > 0.2
    loaded = io.load(tmp_path / "run" / "dictionary")
    assert isinstance(loaded, CrossLayerTranscoder)
    x = batches[0][0]
    assert torch.equal(loaded(x).recons, clt(x).recons)


def test_clt_bad_config_and_input():
    with pytest.raises(ConfigError, match="hook_names has 1 names but n_layers=2"):
        CLTConfig(d_in=4, d_out=4, d_sae=3, n_layers=2, hook_names=("a",))
    with pytest.raises(ShapeError, match="n_layers, d_in"), ill_typed():
        _clt()(torch.randn(2, 6))


def _model64():
    from mechscope.models.config import MLPConfig

    return tiny_model("gpt2", seed=1, n_layers=3, mlp=MLPConfig(d_mlp=64, act="relu", bias=True)).double()


def test_full_clt_replacement_with_error_terms_equals_the_model():
    model = _model64()
    toks = torch.tensor([[3, 9, 14, 2, 7, 30]])
    clt = _clt(n=3, d=32, skip=True)
    ref = model(toks)
    with replacement(model, clt) as names:
        out, cache = model.run_with_cache(toks, names=[f"{w}.hook_sae_acts_post" for w in names]
                                          + [f"{w}.hook_sae_error" for w in names])
        # editing a layer-0 feature changes every later MLP output by its decoder vectors
        f = int(cache["blocks.0.hook_mlp_out.hook_sae_acts_post"].sum((0, 1)).argmax())
        with model.hooks(fwd=[("blocks.0.hook_mlp_out.hook_sae_acts_post",
                               lambda a, hook: a.index_fill(-1, torch.tensor([f]), 0.0))]):
            edited = model(toks)
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)  # float64; the hooked norm runs unfused
    assert cache["blocks.1.hook_mlp_out.hook_sae_acts_post"].shape == (1, 6, 5)
    assert cache["blocks.0.hook_mlp_out.hook_sae_acts_post"][..., f].abs().max() > 0
    assert (edited - ref).abs().max() > 1e-6
    with replacement(model, clt, use_error_term=False):
        no_err = model(toks)
    assert (no_err - ref).abs().max() > 1e-3


def test_per_layer_transcoder_replacement_with_error_terms_equals_the_model():
    model = _model64()
    toks = torch.tensor([[3, 9, 14, 2]])
    tcs = [Transcoder(TranscoderConfig(d_in=32, d_out=32, d_sae=16, dtype="float64", seed=i,
                                       hook_name=f"blocks.{i}.ln2.hook_normalized",
                                       target_hook_name=f"blocks.{i}.hook_mlp_out")) for i in (0, 2)]
    ref = model(toks)
    with replacement(model, tcs):
        assert torch.allclose(model(toks), ref, atol=1e-12, rtol=0)


def test_transcoders_for_another_model_are_refused():
    model = _model64()
    clt = _clt(n=2, d=32)
    with pytest.raises(ConfigError, match="n_layers=2 but the model has 3"), replacement(model, clt):
        pass
    wide = _clt(n=3, d=16)
    with pytest.raises(ConfigError, match="another model"), replacement(model, wide):
        pass
    named = CrossLayerTranscoder(CLTConfig(d_in=32, d_out=32, d_sae=4, n_layers=3, model_name="gpt2-small"))
    with pytest.raises(ConfigError, match="trained on model 'gpt2-small'"), replacement(model, named):
        pass
