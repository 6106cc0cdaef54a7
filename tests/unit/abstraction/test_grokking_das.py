"""DAS on the modular-addition model: the Fourier subspace and the per-hook sweep on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from mechscope.errors import ConfigError, ShapeError
from mechscope.experiments.grokking import GrokkingConfig, build, run
from mechscope.experiments.grokking_das.run import das_grokking, fourier_subspace, interchange_data
from mechscope.experiments.grokking_das.run import run as das_run
from tests.typecheck import ill_typed

TINY = GrokkingConfig(p=5, train_frac=0.6, d_model=16, n_heads=2, d_head=8, d_mlp=32, epochs=3, eval_every=1,
                      checkpoint_every=3)


def test_fourier_subspace_recovers_planted_directions() -> None:
    p, keys, d = 13, [2, 5], 20
    g = torch.Generator().manual_seed(0)
    v = torch.randint(0, p, (400,), generator=g)
    w = 2 * math.pi * torch.tensor(keys) / p
    feats = torch.cat([torch.cos(v[:, None] * w), torch.sin(v[:, None] * w)], 1)  # [n 4]
    planted, _ = torch.linalg.qr(torch.randn(d, 4, generator=g))
    acts = feats @ planted.T * 3 + 0.05 * torch.randn(400, d, generator=g) + torch.randn(d, generator=g)
    basis = fourier_subspace(acts, v, p, keys)
    assert basis.shape == (d, 4)
    assert torch.allclose(basis.T @ basis, torch.eye(4), atol=1e-5)
    assert float(torch.linalg.svdvals(basis.T @ planted).min()) > 0.99  # spans the planted subspace
    with pytest.raises(ConfigError, match="key frequency"):
        fourier_subspace(acts, v, p, [])
    with ill_typed(), pytest.raises(ShapeError, match="values has 3 rows"):
        fourier_subspace(acts, v[:3], p, keys)


def test_interchange_labels_follow_the_causal_model() -> None:
    data = interchange_data(7, ["a", "b"], 30, seed=0)
    a_src, b_src = data.sources[0][:, 0], data.sources[1][:, 1]
    assert torch.equal(data.labels, (a_src + b_src) % 7)  # rows that do not intervene carry the base input
    assert bool((data.base[:, 2] == 7).all())


def test_das_grokking_rows_and_full_swap() -> None:
    model, _ = build(TINY)
    rows = das_grokking(model, 5, [1], n_train=64, n_test=40, epochs=1)
    assert [(r["hook"].split(".")[-1], r["causal_model"]) for r in rows] == [
        (h, m) for m in ("sum", "operands") for h in ("hook_resid_mid", "hook_post", "hook_resid_post")]
    assert all(r["subspace_dim"] == 2 and 0 <= r["iia"] <= 1 and 0 <= r["overlap"] <= 1 + 1e-6 for r in rows)
    # every coordinate swapped: all three subspaces are the whole residual, so they agree with the model's
    # own answer on the source pair
    full = das_grokking(model, 5, [1], hooks=("blocks.0.hook_resid_post",), models=("sum",), dims=16, n_train=32,
                        n_test=40, epochs=1)[0]
    src = interchange_data(5, ["S"], 40, seed=2).sources[0]
    with torch.no_grad():
        agree = float((model(src)[:, -1].argmax(-1) == (src[:, 0] + src[:, 1]) % 5).float().mean())
    assert full["iia"] == full["iia_random_rotation"] == full["iia_fourier"] == round(agree, 4)
    with pytest.raises(ConfigError, match="unknown causal models"):
        das_grokking(model, 5, [1], models=("nope",))


def test_das_grokking_run_dir(tmp_path) -> None:
    run(TINY, tmp_path / "grok", progress=False)
    res = das_run(tmp_path / "grok", n_train=32, epochs=1, hooks=("blocks.0.mlp.hook_post",))
    assert res["task"] == "grokking" and res["p"] == 5 and res["hook"] == "blocks.0.mlp.hook_post"
    assert {"iia", "iia_random_rotation", "iia_fourier", "subspace_dim", "key_frequencies"} <= set(res)
    assert res["subspace_dim"] == 2 * len(res["key_frequencies"])
