"""The pairwise-AND task: enumeration, metrics on a hand-built solution, width batching."""

from __future__ import annotations

import itertools

import pytest
import torch

from mechscope.errors import ConfigError
from mechscope.toy.and_task import AndMLP, AndTaskConfig, and_dataset, and_metrics, train_and_sweep
from tests.typecheck import ill_typed


def test_dataset_matches_brute_force() -> None:
    d = and_dataset(5)
    assert d.inputs.shape == (1 + 5 + 10, 5) and d.targets.shape == (16, 10)
    assert (d.inputs.sum(-1) <= 2).all() and len({tuple(r) for r in d.inputs.tolist()}) == 16
    for x, y in zip(d.inputs.tolist(), d.targets.tolist(), strict=True):
        assert y == [float(x[a] and x[b]) for a, b in itertools.combinations(range(5), 2)]


def test_metrics_on_hand_built_one_neuron_per_and() -> None:
    n = 5
    cfg = AndTaskConfig(n_vars=n, widths=(10,), seeds_per_width=1)
    d = and_dataset(n)
    model = AndMLP(n, torch.tensor([10]), seed=0)
    with torch.no_grad():
        for p, (a, b) in enumerate(d.pairs):  # neuron p = ReLU(x_a + x_b - 1), read out by output p
            model.W_in[0, :, p] = 0
            model.W_in[0, a, p] = model.W_in[0, b, p] = 1
        model.b_in.fill_(-1)
        model.W_out.copy_(torch.eye(10)[None])
        model.b_out.zero_()
        out = model(d.inputs)
    exact, acc, n_ok = and_metrics(out, d.targets, cfg)
    assert float(exact) == 1 and float(acc) == 1 and int(n_ok) == 10
    bad = out.clone()
    bad[0, -1, 3] = 0.7  # one wrong entry on a pair input
    exact, acc, n_ok = and_metrics(bad, d.targets, cfg)
    assert int(n_ok) == 9 and float(exact) == pytest.approx(15 / 16)


def test_width_sweep_equals_each_width_alone() -> None:
    torch.set_num_threads(1)
    cfg = AndTaskConfig(n_vars=4, widths=(2, 5), seeds_per_width=1, steps=40, progress=False, seed=9)
    res = train_and_sweep(cfg)
    for k, w in enumerate((2, 5)):
        alone = train_and_sweep(AndTaskConfig(n_vars=4, widths=(w,), seeds_per_width=1, steps=40,
                                              progress=False, seed=9 + k))
        assert torch.allclose(alone.model.W_in[0], res.model.W_in[k, :, :w], atol=1e-5)
        assert torch.allclose(alone.loss[0], res.loss[k], atol=1e-5)
    assert float(res.model.W_in.detach()[0, :, 2:].abs().max()) == 0  # masked neurons stay off


def test_bad_config_rejected() -> None:
    with pytest.raises(ConfigError, match="objective"), ill_typed():
        AndTaskConfig(objective="hinge")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="widths"):
        AndTaskConfig(widths=())
