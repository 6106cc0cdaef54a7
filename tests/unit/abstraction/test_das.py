"""Interchange interventions and DAS on models whose causal structure is known by construction."""

from __future__ import annotations

import random

import pytest
import torch

from mechscope.abstraction.causal_model import CausalModel, counterfactual_dataset
from mechscope.abstraction.das import (
    DASConfig,
    InterchangeData,
    from_counterfactuals,
    iia,
    random_rotation,
    train_das,
)
from mechscope.abstraction.interchange import block_masks, interchange, rotation_from_basis, swap
from mechscope.errors import ConfigError, HookNameError, ShapeError
from mechscope.models.toy.mlp import HookedMLP
from tests.conftest import tiny_model
from tests.typecheck import ill_typed

D = 6


def sign_model(seed: int = 0):
    """out = class (x0 > 0); the hidden layer holds x rotated by a random Q, so x0 lies along Q[:, 0]."""
    q = random_rotation(D, seed=seed + 7)
    m = HookedMLP(D, [D], 2, act="identity", seed=seed)
    with torch.no_grad():
        m.blocks[0].linear.weight.copy_(q)
        m.blocks[0].linear.bias.zero_()
        m.unembed.weight.copy_(10 * torch.stack([-q[:, 0], q[:, 0]]))
        m.unembed.bias.zero_()
    return m, q


CM = CausalModel(values={"x": [], "V": [False, True], "O": [False, True]}, parents={"V": ["x"], "O": ["V"]},
                 mechanisms={"V": lambda x: x[0] > 0, "O": lambda v: v}, output="O")


def sample(rng: random.Random):
    return {"x": tuple(rng.gauss(0, 1) for _ in range(D))}


def data(n=400, seed=0):
    cfs = counterfactual_dataset(CM, sample, n, [["V"]], seed=seed)
    return from_counterfactuals(cfs, ["V"], lambda inp: torch.tensor(inp["x"]))


def test_causal_model_counterfactuals():
    cfs = counterfactual_dataset(CM, sample, 50, [["V"]])
    assert all(c.label == (c.sources["V"]["x"][0] > 0) for c in cfs)
    with pytest.raises(ConfigError, match="cycle"):
        CausalModel(values={"a": [0], "b": [0]}, parents={"a": ["b"], "b": ["a"]},
                    mechanisms={"a": lambda b: b, "b": lambda a: a}, output="a")
    with pytest.raises(ConfigError, match="unknown"):
        CM.run({"x": (1.0,) * D}, fixed={"W": 1})


def test_true_rotation_gives_iia_1_and_random_gives_chance():
    model, q = sign_model()
    test = data(400, seed=1)
    masks = block_masks(D, [1])
    assert iia(model, "blocks.0.hook_post", test, q, masks) == 1.0
    rand = [iia(model, "blocks.0.hook_post", test, random_rotation(D, seed=s), masks) for s in range(3)]
    assert max(rand) <= 0.7
    # a subspace given by its basis: the same result
    assert iia(model, "blocks.0.hook_post", test, rotation_from_basis(q[:, :1]), masks) == 1.0


def test_das_learns_the_rotation():
    model, q = sign_model()
    res = train_das(model, "blocks.0.hook_post", data(512, 0), data(300, 1),
                    DASConfig(dims=(1,), epochs=15, batch_size=64, lr=0.05))
    assert res.iia >= 0.95
    assert abs(float(res.rotation[:, 0] @ q[:, 0])) > 0.9
    assert all(p.requires_grad for p in model.parameters())  # the model is given back trainable


def test_partial_das_learns_the_direction_and_swaps_like_the_full_rotation():
    model, q = sign_model()
    res = train_das(model, "blocks.0.hook_post", data(512, 0), data(300, 1),
                    DASConfig(dims=(1,), epochs=15, batch_size=64, lr=0.05, partial=True))
    assert res.iia >= 0.95 and res.rotation.shape == (D, D)
    assert torch.allclose(res.rotation.T @ res.rotation, torch.eye(D), atol=1e-5)
    assert abs(float(res.rotation[:, 0] @ q[:, 0])) > 0.9
    # a partial [d K] rotation swaps exactly what its square completion swaps
    x, s = torch.randn(5, D), torch.randn(5, D)
    full, masks = rotation_from_basis(res.rotation[:, :2]), block_masks(D, [2])
    assert torch.allclose(swap(x, [s], res.rotation[:, :2], masks[:, :2]), swap(x, [s], full, masks), atol=1e-5)


def test_boundless_das_learns_a_small_subspace():
    model, _ = sign_model()
    res = train_das(model, "blocks.0.hook_post", data(512, 0), data(300, 1),
                    DASConfig(dims=(1,), boundless=True, epochs=20, lr=0.05))
    assert res.iia >= 0.9 and 1 <= res.widths[0] <= D


def test_full_residual_interchange_equals_running_the_source():
    model = tiny_model("llama")
    g = torch.Generator().manual_seed(0)
    base, src = torch.randint(0, 50, (3, 7), generator=g), torch.randint(0, 50, (3, 7), generator=g)
    out = interchange(model, base, [src], "blocks.0.hook_resid_pre")
    with torch.no_grad():
        assert torch.allclose(out, model(src), atol=1e-5)
    # a random rotation with a full mask is still the full activation
    out2 = interchange(model, base, [src], "blocks.1.hook_resid_pre", rotation=random_rotation(32, 3),
                       masks=torch.ones(1, 32))
    with torch.no_grad():
        assert torch.allclose(out2, model(src), atol=1e-4)
        # only position 2 swapped: positions before it are untouched
        part = interchange(model, base, [src], "blocks.0.hook_resid_pre", positions=[2])
        assert torch.allclose(part[:, :2], model(base)[:, :2], atol=1e-5)
        assert not torch.allclose(part[:, 2:], model(base)[:, 2:], atol=1e-3)


def test_clear_errors():
    model, _ = sign_model()
    x = torch.randn(4, D)
    with pytest.raises(ShapeError, match="larger than the hook"):
        block_masks(D, [4, 3])
    with pytest.raises(ShapeError, match="larger than the hook"):
        rotation_from_basis(torch.randn(3, 4))
    with pytest.raises(ShapeError, match="one entry per base input"), ill_typed():
        InterchangeData(x, [x], torch.zeros(3, dtype=torch.long))
    with pytest.raises(HookNameError):
        interchange(model, x, [x], "blocks.0.hook_psot")
    with pytest.raises(ConfigError, match="one dims entry per variable"):
        train_das(model, "blocks.0.hook_post", data(8), data(8), DASConfig(dims=(1, 1)))
