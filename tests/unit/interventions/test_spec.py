"""Intervention specs: each kind against a hand computation; scoping; per-row specs; errors."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import ConfigError, HookNameError, ShapeError
from mechscope.hooks.module import live_hook_leaks
from mechscope.interventions.apply import intervene, run_with_interventions
from mechscope.interventions.spec import Ablate, Add, Patch, Replace
from tests.typecheck import ill_typed
from tests.unit.interventions.conftest import gpt2_like

Z = "blocks.1.attn.hook_z"
R = "blocks.0.hook_resid_post"


def seen(model, tokens, specs, hook):
    """The activation at ``hook`` after the specs ran (recorded by a later hook)."""
    out = {}
    with torch.no_grad(), intervene(model, specs), model.hooks(fwd=[(hook, lambda x, h: out.setdefault("x", x))]):
        model(tokens)
    return out["x"]


def test_ablations_and_unhooked_runs_untouched(pair):
    model = gpt2_like()
    clean, corrupted, *_ = pair
    before = model(clean).detach()
    _, cache = model.run_with_cache(clean, names=[Z])
    z = cache[Z]
    x = seen(model, clean, [Ablate(hook=Z, heads=[1], positions=[2, 4])], Z)
    assert torch.equal(x[:, [2, 4], 1], torch.zeros_like(x[:, [2, 4], 1]))
    keep = torch.ones_like(z, dtype=torch.bool)
    keep[:, [2, 4], 1] = False
    assert torch.equal(x[keep], z[keep])
    _, ref = model.run_with_cache(corrupted, names=[Z])
    xm = seen(model, clean, [Ablate(hook=Z, kind="mean", values=ref[Z], heads=[0])], Z)
    assert torch.allclose(xm[:, :, 0], ref[Z].mean(0, keepdim=True)[:, :, 0].expand_as(xm[:, :, 0]))
    xr = seen(model, clean, [Ablate(hook=Z, kind="resample", values=ref[Z], seed=3)], Z)
    assert all(any(torch.equal(xr[i], ref[Z][j]) for j in range(3)) for i in range(3))
    assert not live_hook_leaks()
    assert torch.equal(model(clean).detach(), before)  # nothing left behind


def test_specs_differ_per_row(pair):
    model = gpt2_like()
    clean, corrupted, *_ = pair
    _, cc = model.run_with_cache(clean, names=[R])
    _, kc = model.run_with_cache(corrupted, names=[R])
    x = seen(model, corrupted, [Patch(hook=R, source=cc, rows=[0], positions=[1]),
                                Ablate(hook=R, rows=[2], neurons=[0, 3])], R)
    assert torch.equal(x[0, 1], cc[R][0, 1]) and torch.equal(x[0, 2:], kc[R][0, 2:])
    assert torch.equal(x[1], kc[R][1])
    assert torch.equal(x[2, :, [0, 3]], torch.zeros(6, 2)) and torch.equal(x[2, :, 1], kc[R][2, :, 1])
    # source_rows: every row takes clean prompt 2
    xs = seen(model, corrupted, [Patch(hook=R, source=cc, source_rows=[2, 2, 2])], R)
    assert torch.equal(xs, cc[R][[2, 2, 2]])


def test_add_and_replace(pair):
    model = gpt2_like()
    clean, *_ = pair
    _, c = model.run_with_cache(clean, names=[R])
    v = torch.arange(16.0)
    x = seen(model, clean, [Add(hook=R, vector=v, scale=0.5, positions=[-1])], R)
    torch.testing.assert_close(x[:, -1], c[R][:, -1] + 0.5 * v)
    assert torch.equal(x[:, :-1], c[R][:, :-1])
    y = seen(model, clean, [Replace(hook=R, fn=lambda a, hook: -a)], R)
    assert torch.equal(y, -c[R])
    logits = run_with_interventions(model, clean, [Replace(hook=R, fn=lambda a, hook: a * 0 + 1)])
    assert logits.shape == (3, 6, 23) and not logits.requires_grad


def test_errors(pair):
    model = gpt2_like()
    clean, *_ = pair
    with pytest.raises(ConfigError, match="values="):
        Ablate(hook=Z, kind="mean")
    with pytest.raises(ConfigError, match="kind"), ill_typed():
        Ablate(hook=Z, kind="median")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no n_heads"):
        run_with_interventions(model, clean, [Ablate(hook=R, heads=[0])])
    with pytest.raises(ConfigError, match="out of range"):
        run_with_interventions(model, clean, [Ablate(hook=Z, heads=[5])])
    with pytest.raises(HookNameError):
        run_with_interventions(model, clean, [Ablate(hook="blocks.0.hook_resid_pree")])
    with pytest.raises(ShapeError, match="non-batch dims"):
        run_with_interventions(model, clean, [Patch(hook=R, source=torch.zeros(3, 5, 16))])
    with pytest.raises(ConfigError, match="no entry"):
        Patch(hook=R, source={"blocks.1.hook_resid_post": torch.zeros(1)})
    assert not live_hook_leaks()
