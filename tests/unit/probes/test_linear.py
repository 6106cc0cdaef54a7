"""Linear probes: a planted direction is recovered; datasets, splits, control tasks, files, steering."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import ConfigError, ModelFileError, ShapeError
from mechscope.interventions.apply import intervene
from mechscope.probes.dataset import ActivationDataset, collect, split_by_group
from mechscope.probes.linear import LinearProbe, ProbeConfig, control_labels, fit_probes, score
from mechscope.probes.sweep import layer_hooks, probe_sweep
from tests.conftest import tiny_model
from tests.typecheck import ill_typed


def planted(n: int = 600, d: int = 16, seed: int = 0, classes: int = 2):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(d, generator=g)
    v /= v.norm()
    x = torch.randn(n, d, generator=g) * 2 + 3.0  # offset and scale: the probe must standardise
    proj = (x - 3.0) @ v
    y = (proj > 0).long() if classes == 2 else torch.bucketize(proj, torch.tensor([-0.8, 0.8]))
    return x, y, v


def test_logistic_probe_recovers_planted_direction():
    x, y, v = planted()
    probes = fit_probes(x[None, :400], y[:400], x[None, 400:], y[400:], ["h"], ProbeConfig(l2=1e-4))
    p = probes[0]
    assert score(p, x[400:], y[400:]) > 0.95
    assert float(p.direction() @ v) > 0.95
    # a random direction is far from it (the check could fail)
    assert abs(float(torch.randn(16, generator=torch.Generator().manual_seed(5)) @ v)) < 3


def test_linear_regression_and_multiclass():
    x, _, v = planted()
    target = (x - 3.0) @ v * 2.0 + 1.0
    p = fit_probes(x[None, :400], target[:400], x[None, 400:], target[400:], ["h"], ProbeConfig(kind="linear"))[0]
    assert score(p, x[400:], target[400:]) > 0.98
    assert float(p.direction() @ v) > 0.98
    x3, y3, v3 = planted(classes=3)
    p3 = fit_probes(x3[None, :400], y3[:400], x3[None, 400:], y3[400:], ["h"], ProbeConfig(l2=1e-4))[0]
    assert p3.n_classes == 3 and score(p3, x3[400:], y3[400:]) > 0.85
    assert float(p3.direction(2) @ v3) > 0.9 and float(p3.direction(0) @ v3) < -0.9
    with pytest.raises(ConfigError, match="needs cls"):
        p3.direction()


def test_batched_probes_equal_separate_ones():
    x, y, _ = planted()
    x2 = torch.stack([x, x.flip(1)])
    both = fit_probes(x2[:, :400], y[:400], x2[:, 400:], y[400:], ["a", "b"])
    alone = fit_probes(x2[1:, :400], y[:400], x2[1:, 400:], y[400:], ["b"])
    assert torch.allclose(both[1].weight, alone[0].weight, atol=1e-5)


def test_save_load_roundtrip_and_steering(tmp_path):
    x, y, _ = planted()
    p = fit_probes(x[None, :400], y[:400], x[None, 400:], y[400:], ["blocks.1.hook_resid_post"])[0]
    q = LinearProbe.load(p.save(tmp_path / "p"))
    assert torch.equal(q.predict(x), p.predict(x)) and q.hook == p.hook
    (tmp_path / "p" / "probe.safetensors").write_bytes(b"junk")
    with pytest.raises(ModelFileError):
        LinearProbe.load(tmp_path / "p")
    # its direction steers / is projected out of a real model's residual stream
    model = tiny_model("llama", d_model=16)
    toks = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    hook = "blocks.1.hook_resid_post"
    _, clean = model.run_with_cache(toks, names=[hook])
    with intervene(model, [p.ablation()]):
        _, abl = model.run_with_cache(toks, names=[hook])
    assert abl[hook] @ p.direction() == pytest.approx(torch.zeros(2, 6), abs=1e-4)
    with intervene(model, [p.steering(5.0)]):
        _, st = model.run_with_cache(toks, names=[hook])
    assert torch.allclose((st[hook] - clean[hook]) @ p.direction(), torch.full((2, 6), 5.0), atol=1e-4)


def test_collect_one_pass_matches_cache_and_bad_labels():
    model = tiny_model("gpt2")
    toks = torch.randint(0, 50, (5, 7), generator=torch.Generator().manual_seed(1))
    hooks = layer_hooks("hook_resid_post", 2)
    ds = collect(model, hooks, toks, torch.full((5,), -1), torch.arange(5) % 2, batch_size=2)
    _, cache = model.run_with_cache(toks, names=hooks)
    for h in hooks:
        assert torch.allclose(ds.acts[h], cache[h][:, -1], atol=1e-5)
    assert torch.equal(ds.types, toks[:, -1]) and torch.equal(ds.groups, torch.arange(5))
    with pytest.raises(ShapeError, match="one label per chosen position"):
        collect(model, hooks, toks, torch.full((5,), -1), torch.arange(4))
    mask = torch.zeros(5, 7, dtype=torch.bool)
    mask[:, 2:4] = True
    ds2 = collect(model, hooks[:1], toks, mask, torch.zeros(10, dtype=torch.long))
    assert ds2.acts[hooks[0]].shape == (10, 32) and torch.equal(ds2.groups, torch.arange(5).repeat_interleave(2))


def test_splits_never_share_a_document_and_cache_roundtrip(tmp_path):
    groups = torch.arange(300) // 7
    s = split_by_group(groups, seed=3)
    sets = [set(groups[i].tolist()) for i in s]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(len(i) for i in s) == 300 and all(len(i) > 0 for i in s)
    x, y, _ = planted(n=300)
    ds = ActivationDataset({"h": x}, y, groups, torch.arange(300) % 11)
    back = ActivationDataset.load(ds.save(tmp_path / "ds"))
    assert torch.equal(back.acts["h"], x) and torch.equal(back.labels, y) and torch.equal(back.types, ds.types)
    with pytest.raises(ShapeError), ill_typed():
        ActivationDataset({"h": x[:10]}, y, groups)


def test_control_task_selectivity():
    # labels are a property of the type here (type parity) AND linearly decodable; a control task maps types
    # to random labels: with one-hot type features the probe fits both, with a planted feature only the task
    g = torch.Generator().manual_seed(0)
    n, n_types = 800, 40
    types = torch.randint(0, n_types, (n,), generator=g)
    y = (types % 2).long()
    x = torch.randn(n, 8, generator=g)
    x[:, 0] += 3 * (2 * y - 1)
    ds = ActivationDataset({"h": x}, y, torch.arange(n) // 4, types)
    ctrl = control_labels(types, y)
    assert all(len(set(ctrl[types == t].tolist())) <= 1 for t in range(n_types))
    r = probe_sweep(ds, split_by_group(ds.groups)).rows[0]
    assert r.test > 0.97 and r.control_test is not None and r.control_test < 0.8 and r.selectivity > 0.2
