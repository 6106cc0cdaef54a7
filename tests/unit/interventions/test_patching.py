"""Batched sweeps equal a slow reference loop that patches one site per forward."""

from __future__ import annotations

import itertools

import pytest
import torch

from mechscope.errors import ConfigError, ShapeError
from mechscope.hooks.names import act_name
from mechscope.interventions.apply import intervene
from mechscope.interventions.patching import SWEEPS, patch_sweep, readout_logits, run_metric
from mechscope.interventions.spec import Patch
from mechscope.metrics import LogitDiff, normalise


def reference_sweep(model, clean, corrupted, metric, sweep, direction="denoise"):
    """One forward per site, each with a plain ``Patch`` spec (independent of the batched code path)."""
    kind = SWEEPS[sweep]
    base, src = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
    L = model.cfg.n_layers
    hooks = [act_name(kind.short, layer) for layer in range(L)]
    _, cache = model.run_with_cache(src, names=hooks)
    out = {}
    for layer in range(L):
        act = cache[hooks[layer]]
        sizes = {"pos": base.shape[1], "head": act.shape[1 if kind.short == "pattern" else 2]}
        for site in itertools.product(*[range(sizes[a]) for a in kind.site_axes]):
            kw = {("positions" if a == "pos" else "heads"): [i] for a, i in zip(kind.site_axes, site)}
            with torch.no_grad(), intervene(model, [Patch(hook=hooks[layer], source=cache, **kw)]):
                final = model(base, stop_at_layer=L)
                out[(layer, *site)] = float(metric(readout_logits(model, final, -1, base.shape[0])[0]).mean())
    return out


@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_sweep_equals_reference_loop(model, pair, sweep):
    clean, corrupted, answer, wrong = pair
    metric = LogitDiff(answer, wrong)
    ref = reference_sweep(model, clean, corrupted, metric, sweep)
    # one site per forward, every position recomputed: the same kernels on the same batch
    one = patch_sweep(model, clean, corrupted, metric, sweep, memory_mb=1e-6, skip_prefix=False)
    # one site per forward resuming from the base run's keys/values before the patched position
    resume = patch_sweep(model, clean, corrupted, metric, sweep, memory_mb=1e-6)
    many = patch_sweep(model, clean, corrupted, metric, sweep)  # every site of a layer in one forward
    assert one.extra["rows_per_chunk"] == 1 and many.extra["rows_per_chunk"] > 100
    for site, value in ref.items():
        assert float(one.values[site]) == value  # bit-exact
        # bigger GEMMs / a key-value prefix may re-associate float sums: agreement to float32 rounding
        assert float(resume.values[site]) == pytest.approx(value, abs=2e-6)
        assert float(many.values[site]) == pytest.approx(value, abs=2e-6)
    assert len(ref) == one.values.numel()


def test_noising_equals_reference(pair):
    from tests.unit.interventions.conftest import gpt2_like

    model = gpt2_like()
    clean, corrupted, answer, wrong = pair
    metric = LogitDiff(answer, wrong)
    ref = reference_sweep(model, clean, corrupted, metric, "z_by_pos", direction="noise")
    res = patch_sweep(model, clean, corrupted, metric, "z_by_pos", direction="noise", memory_mb=1e-6,
                      skip_prefix=False)
    assert all(float(res.values[k]) == v for k, v in ref.items())


def test_uncorrupted_positions_have_no_effect_and_last_site_restores_clean(model, pair):
    clean, corrupted, answer, wrong = pair
    metric = LogitDiff(answer, wrong)
    res = patch_sweep(model, clean, corrupted, metric, "resid_pre", memory_mb=1e-6, skip_prefix=False)
    # positions 0, 2 are identical in clean and corrupted at layer 0: patching them changes nothing
    assert torch.equal(res.values[0, 0], torch.tensor(res.corrupted, dtype=res.values.dtype))
    post = patch_sweep(model, clean, corrupted, metric, "resid_post", memory_mb=1e-6, skip_prefix=False)
    # the last layer's residual at the answer position determines the logits: full recovery
    assert float(post.values[-1, -1]) == res.clean
    assert float(post.normalised()[-1, -1]) == pytest.approx(1.0, abs=1e-6)


def test_full_clean_cache_recovers_clean_metric_exactly(model, pair):
    clean, corrupted, answer, wrong = pair
    metric = LogitDiff(answer, wrong)
    for hook in ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"):
        _, cache = model.run_with_cache(clean, names=[hook])
        with torch.no_grad(), intervene(model, [Patch(hook=hook, source=cache)]):
            patched = model(corrupted)
        assert torch.equal(metric(patched[:, -1]), metric(model(clean)[:, -1].detach()))
    clean_m = run_metric(model, clean, metric)
    assert float(normalise(clean_m, clean_m, run_metric(model, corrupted, metric))) == 1.0


def test_layers_and_positions_subsets_and_labels(model, pair):
    clean, corrupted, answer, wrong = pair
    metric = LogitDiff(answer, wrong)
    full = patch_sweep(model, clean, corrupted, metric, "attn_out")
    sub = patch_sweep(model, clean, corrupted, metric, "attn_out", layers=[1], positions=[3, 5],
                      pos_labels=list("abcdef"))
    assert sub.labels == {"layer": ["1"], "pos": ["d", "f"]}
    torch.testing.assert_close(sub.values[0], full.values[1, [3, 5]], atol=2e-6, rtol=0)
    assert sub.top(1)[0][0][0] == "1"


def test_errors(model, pair):
    clean, corrupted, answer, wrong = pair
    metric = LogitDiff(answer, wrong)
    with pytest.raises(ShapeError, match="same shape"):
        patch_sweep(model, clean, corrupted[:, :-1], metric)
    with pytest.raises(ConfigError, match="unknown sweep"):
        patch_sweep(model, clean, corrupted, metric, "resid_middle")
    with pytest.raises(ConfigError, match="direction"):
        patch_sweep(model, clean, corrupted, metric, direction="sideways")


def test_heatmap_draws(pair):
    from tests.unit.interventions.conftest import gpt2_like

    clean, corrupted, answer, wrong = pair
    res = patch_sweep(gpt2_like(), clean, corrupted, LogitDiff(answer, wrong), "z_by_pos")
    fig = res.heatmap()
    assert len(fig.axes) >= 6  # one panel per position (+ colorbar)
