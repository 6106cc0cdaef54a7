"""Path patching: a closed form for the direct path, and a one-sender-per-forward reference loop."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import ConfigError
from mechscope.interventions.apply import intervene
from mechscope.interventions.path_patching import Receiver, path_patch
from mechscope.interventions.spec import Patch
from mechscope.metrics import LogitDiff
from tests.unit.interventions.conftest import gpt2_like, linear_readout


def test_direct_path_matches_closed_form(pair):
    """Attention-only, no norms: a head's direct effect is (z_src - z_base) W_O (W_U[a] - W_U[b])."""
    model = linear_readout(n_layers=2)
    clean, corrupted, answer, wrong = pair
    metric = LogitDiff(answer, wrong)
    res = path_patch(model, clean, corrupted, metric, [Receiver(hook="blocks.1.hook_resid_post")])
    _, cc = model.run_with_cache(clean, names=lambda n: n.endswith("hook_z"))
    _, kc = model.run_with_cache(corrupted, names=lambda n: n.endswith("hook_z"))
    du = (model.W_U[:, answer] - model.W_U[:, wrong]).detach()  # [d_model B]
    for layer in range(2):
        dz = (cc["z", layer] - kc["z", layer])[:, -1]  # [B H e]
        direct = torch.einsum("bhe,hed,db->hb", dz, model.W_O[layer].detach(), du).mean(-1)
        torch.testing.assert_close(res.values[layer], res.corrupted + direct, atol=1e-5, rtol=1e-5)
    assert res.values.abs().max() > 0 and res.method == "path"


def reference_path(model, base, src, metric, sender, receiver_hook, heads, positions):
    L = model.cfg.n_layers
    zs = [f"blocks.{i}.attn.hook_z" for i in range(L)]
    _, bc = model.run_with_cache(base, names=zs)
    _, sc = model.run_with_cache(src, names=zs)
    specs = [Patch(hook=z, source=bc) for z in zs]
    specs.append(Patch(hook=zs[sender[0]], source=sc, heads=[sender[1]]))
    rec = {}
    with torch.no_grad(), intervene(model, specs):
        model.run_with_hooks(base, fwd=[(receiver_hook, lambda x, hook: rec.setdefault("x", x.clone()))])
    with torch.no_grad(), intervene(model, [Patch(hook=receiver_hook, source=rec["x"], heads=heads,
                                                  positions=positions)]):
        logits = model(base)
    return float(metric(logits[:, -1]).mean())


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_matches_reference_loop_through_queries(pair, direction):
    model = gpt2_like(n_layers=3)
    clean, corrupted, answer, wrong = pair
    metric = LogitDiff(answer, wrong)
    rec = Receiver(hook="blocks.2.hook_q_input", heads=[1], positions=[5])
    res = path_patch(model, clean, corrupted, metric, [rec], direction=direction, memory_mb=1e-6)
    base, src = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
    assert res.values.shape == (2, 2)
    for layer in range(2):
        for h in range(2):
            ref = reference_path(model, base, src, metric, (layer, h), rec.hook, [1], [5])
            assert float(res.values[layer, h]) == pytest.approx(ref, abs=2e-6)
    batched = path_patch(model, clean, corrupted, metric, [rec], direction=direction)
    torch.testing.assert_close(batched.values, res.values, atol=2e-6, rtol=0)


def test_errors(pair):
    model = gpt2_like()
    clean, corrupted, answer, wrong = pair
    metric = LogitDiff(answer, wrong)
    with pytest.raises(ConfigError, match="at least one"):
        path_patch(model, clean, corrupted, metric, [])
    with pytest.raises(ConfigError, match="no sender"):
        path_patch(model, clean, corrupted, metric, [Receiver(hook="blocks.0.hook_q_input")])
    with pytest.raises(ConfigError, match="block hook"):
        Receiver(hook="hook_embed")
