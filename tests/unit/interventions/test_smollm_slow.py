"""Real-model checks on SmolLM2-135M (slow: loads the embedded GGUF)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.model]


@pytest.fixture(scope="module")
def smollm():
    import mechscope

    return mechscope.load("smollm2-135m")


def test_ioi_behaviour_and_batched_sweep_matches_one_site_forward(smollm):
    from mechscope.data.tasks.ioi import ioi_pairs
    from mechscope.interventions.apply import intervene
    from mechscope.interventions.patching import patch_sweep, readout_logits
    from mechscope.interventions.spec import Patch

    p = ioi_pairs(smollm.tokenizer, 4, order="ABBA")
    with torch.inference_mode():
        ld = p.metric()(smollm(p.clean)[:, -1])
    assert float((ld > 0).float().mean()) >= 0.75
    res = patch_sweep(smollm, p.clean, p.corrupted, p.metric(), "z", layers=[20])
    hook = "blocks.20.attn.hook_z"
    _, cache = smollm.run_with_cache(p.clean, names=[hook])
    for h in (0, 4):
        with torch.inference_mode(), intervene(smollm, [Patch(hook=hook, source=cache, heads=[h])]):
            final = smollm(p.corrupted, stop_at_layer=smollm.cfg.n_layers)
            v = float(p.metric()(readout_logits(smollm, final, -1, 4)[0]).mean())
        assert float(res.values[0, h]) == pytest.approx(v, abs=1e-4)


def test_at_least_20_known_facts(smollm):
    from mechscope.data.tasks.facts import fact_pairs, known_facts

    known = known_facts(smollm)
    assert len(known) >= 20
    p = fact_pairs(smollm, known, max_prompts=4)
    with torch.inference_mode():
        assert bool((p.metric()(smollm(p.clean)[:, -1]) > 0).all())
