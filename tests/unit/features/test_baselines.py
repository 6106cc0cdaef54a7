"""The comparison baselines of docs/features.md: sparsity-matched random directions and density-matched neurons
are real dictionaries (saved, loaded, harvested like any other) with the encoders they claim."""

from __future__ import annotations

import torch

from mechscope.dictionaries.io import load, save
from mechscope.experiments.features import random_directions_like, topk_neurons
from tests.unit.features import helpers


def test_random_directions_keep_hook_count_k_and_centre(tmp_path):
    sae = helpers.dictionary(d_sae=24, k=4)
    sae_dir = save(sae, tmp_path / "sae")
    rnd = load(random_directions_like(str(sae_dir), str(tmp_path / "rnd"), seed=3))
    assert (rnd.cfg.hook_name, rnd.cfg.d_sae, rnd.cfg.k) == (sae.cfg.hook_name, 24, 4)
    assert torch.allclose(rnd.W_dec.norm(dim=-1), torch.ones(24), atol=1e-6)
    assert torch.equal(rnd.W_enc, rnd.W_dec.T) and not torch.allclose(rnd.W_dec, sae.W_dec)
    assert torch.equal(rnd.b_dec, sae.b_dec) and not rnd.b_enc.any()
    x = torch.randn(5, 32)
    pre = (sae.cfg.input_scale * x - sae.b_dec) @ rnd.W_dec.T
    acts = rnd.encode(x)
    assert ((acts > 0).sum(-1) <= 4).all()
    top = pre.topk(4, dim=-1).indices
    assert torch.allclose(acts.gather(-1, top), pre.gather(-1, top).relu())  # its k most aligned directions


def test_topk_neurons_keep_each_tokens_k_largest(tmp_path):
    d = load(topk_neurons("blocks.0.mlp.hook_post", 16, 3, str(tmp_path / "n"), model_name="tiny"))
    x = torch.randn(7, 16)
    acts = d.encode(x)
    kept = torch.zeros_like(x).scatter(-1, x.topk(3, dim=-1).indices, 1.0).bool()
    assert torch.equal(acts, torch.where(kept & (x > 0), x, torch.zeros_like(x)))
    assert d.cfg.hook_name == "blocks.0.mlp.hook_post" and torch.equal(d.W_dec, torch.eye(16))
