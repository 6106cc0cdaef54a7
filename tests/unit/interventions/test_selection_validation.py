"""Selections read as the user meant them: a boolean mask selects where True (not indices 0/1), floats and
wrong-length masks are refused, and ``patch_sweep`` checks positions (incl. negative) and ``readout``."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import ConfigError
from mechscope.interventions.apply import intervene
from mechscope.interventions.attribution import attribution_sweep
from mechscope.interventions.patching import patch_sweep
from mechscope.interventions.spec import Ablate
from mechscope.metrics import LogitDiff
from tests.typecheck import ill_typed
from tests.unit.interventions.conftest import gpt2_like

Z = "blocks.1.attn.hook_z"
POST = "blocks.0.mlp.hook_post"


def seen(model, tokens, specs, hook):
    out = {}
    with torch.no_grad(), intervene(model, specs), model.hooks(fwd=[(hook, lambda x, h: out.setdefault("x", x))]):
        model(tokens)
    return out["x"]


@pytest.mark.parametrize("as_tensor", [True, False])
def test_boolean_mask_selects_where_true(pair, as_tensor):
    model = gpt2_like()
    clean = pair[0]
    mask = [False, False, True, False, True, True]  # positions 2, 4, 5 (not indices 0 and 1)
    positions = torch.tensor(mask) if as_tensor else mask
    x = seen(model, clean, [Ablate(hook=Z, positions=positions)], Z)
    _, cache = model.run_with_cache(clean, names=[Z])
    assert torch.equal(x[:, [2, 4, 5]], torch.zeros_like(x[:, [2, 4, 5]]))
    assert torch.equal(x[:, [0, 1, 3]], cache[Z][:, [0, 1, 3]])


def test_boolean_mask_on_heads_and_neurons(pair):
    model = gpt2_like()
    clean = pair[0]
    x = seen(model, clean, [Ablate(hook=Z, heads=torch.tensor([False, True]))], Z)
    _, cache = model.run_with_cache(clean, names=[Z, POST])
    assert torch.equal(x[:, :, 1], torch.zeros_like(x[:, :, 1]))
    assert torch.equal(x[:, :, 0], cache[Z][:, :, 0])
    neurons = torch.zeros(32, dtype=torch.bool)
    neurons[[3, 30]] = True
    y = seen(model, clean, [Ablate(hook=POST, neurons=neurons)], POST)
    assert torch.equal(y[..., [3, 30]], torch.zeros_like(y[..., [3, 30]]))
    assert torch.equal(y[..., :3], cache[POST][..., :3])


def test_mask_of_wrong_length_and_floats_are_refused(pair):
    model = gpt2_like()
    clean = pair[0]
    with pytest.raises(ConfigError, match="boolean mask.*2 entries.*size 6"):
        seen(model, clean, [Ablate(hook=Z, positions=[True, False])], Z)
    with pytest.raises(ConfigError, match="ints or a boolean mask"), ill_typed():
        seen(model, clean, [Ablate(hook=Z, positions=torch.tensor([0.0, 2.0]))], Z)
    with pytest.raises(ConfigError, match="must be ints"), ill_typed():
        seen(model, clean, [Ablate(hook=Z, heads=[0.7])], Z)  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="must be ints"), ill_typed():
        seen(model, clean, [Ablate(hook=Z, heads=[0, True])], Z)
    with pytest.raises(ConfigError, match="list of ints"), ill_typed():
        seen(model, clean, [Ablate(hook=Z, heads="1")], Z)  # type: ignore[arg-type]


def test_patch_sweep_negative_positions_match_positive(pair):
    model = gpt2_like()
    clean, corrupted, answer, wrong = pair
    metric = LogitDiff(answer, wrong)
    neg = patch_sweep(model, clean, corrupted, metric, "resid_pre", positions=[-1, -3], layers=[1])
    pos = patch_sweep(model, clean, corrupted, metric, "resid_pre", positions=[5, 3], layers=[1])
    assert torch.allclose(neg.values, pos.values, atol=1e-5)
    assert neg.labels["pos"] == ["5", "3"]


@pytest.mark.parametrize("sweep_fn", [patch_sweep, attribution_sweep])
def test_sweeps_refuse_bad_positions_layers_and_readout(pair, sweep_fn):
    model = gpt2_like()
    clean, corrupted, answer, wrong = pair
    metric = LogitDiff(answer, wrong)
    with pytest.raises(ConfigError, match=r"positions \[6\] out of range.*6 tokens"):
        sweep_fn(model, clean, corrupted, metric, "resid_pre", positions=[0, 6])
    with pytest.raises(ConfigError, match=r"positions \[-7\] out of range"):
        sweep_fn(model, clean, corrupted, metric, "resid_pre", positions=[-7])
    with pytest.raises(ConfigError, match="repeat"):
        sweep_fn(model, clean, corrupted, metric, "resid_pre", positions=[5, -1])
    with pytest.raises(ConfigError, match=r"layers \[2\] out of range"):
        sweep_fn(model, clean, corrupted, metric, "resid_pre", layers=[2])
    with pytest.raises(ConfigError, match="readout=6 out of range"):
        sweep_fn(model, clean, corrupted, metric, "resid_pre", readout=6)
    with pytest.raises(ConfigError, match="readout positions"):
        sweep_fn(model, clean, corrupted, metric, "resid_pre", readout=torch.tensor([5, 9, 0]))
    with pytest.raises(ConfigError, match="one int position per prompt"):
        sweep_fn(model, clean, corrupted, metric, "resid_pre", readout=torch.tensor([5, 5]))
    with pytest.raises(ConfigError, match="must be ints"), ill_typed():
        sweep_fn(model, clean, corrupted, metric, "resid_pre", positions=[True, False, True, False, True, False])
