"""ACDC's resumed, batched forward (``circuits/resume.py``) against the one-edge-at-a-time reference, bit for bit."""

from __future__ import annotations

import pytest
import torch

from mechscope.circuits.discover import discover
from mechscope.circuits.graph import Graph
from mechscope.circuits.patchable import masked_sum, patch_values, patched_logits
from mechscope.circuits.resume import ResumeForward
from mechscope.errors import ConfigError
from mechscope.models.config import AttentionConfig
from tests.conftest import tiny_model
from tests.unit.circuits.helpers import logit_diff_metric, pair


def _wide_gqa():
    """12 query heads, 4 key-value heads: sender groups of 12 and 18 receivers per layer (the sizes where
    CPU GEMMs start to sum differently by shape)."""
    return tiny_model("llama", seed=2, attention=AttentionConfig(n_heads=12, d_head=4, n_kv_heads=4))


@pytest.mark.parametrize("kind", ["llama", "gpt2", "neox", "attn_only"])
def test_acdc_batched_equals_reference_bit_for_bit(kind: str) -> None:
    # llama: grouped-query attention, RMSNorm, pre-norm; gpt2: LayerNorm pre-norm; neox: parallel residual
    model = tiny_model(kind, seed=1)
    clean, corrupted = pair(4)
    kw = dict(method="acdc", threshold=0.002)
    seq = discover(model, clean, corrupted, logit_diff_metric(), batched=False, **kw)
    bat = discover(model, clean, corrupted, logit_diff_metric(), batched=True, chunk=16, **kw)
    assert 0 < len(seq.kept) < len(seq.graph)  # a real decision, neither nothing nor everything
    assert seq.kept == bat.kept
    assert torch.equal(seq.scores, bat.scores)
    assert bat.info["forwards"] < 0.8 * seq.info["forwards"]


def test_acdc_metric_objective_mean_ablation_and_full_positions() -> None:
    model = tiny_model("llama", seed=3)
    clean, corrupted = pair(5)

    def metric(logits: torch.Tensor) -> torch.Tensor:  # every position
        return (logits[..., 3] - logits[..., 7]).mean(-1)

    kw = dict(method="acdc", threshold=0.01, objective="metric", ablation="mean", readout=None)
    seq = discover(model, clean, corrupted, metric, batched=False, **kw)
    bat = discover(model, clean, corrupted, metric, batched=True, chunk=8, **kw)
    assert 0 < len(seq.kept) < len(seq.graph)
    assert seq.kept == bat.kept and torch.equal(seq.scores, bat.scores)


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("receiver", ["logits", "m1", "a1.kv1<k>", "a1.h2<q>", "a0.kv0<v>"])
def test_resumed_logits_equal_each_variant_alone(receiver: str, wide: bool) -> None:
    model = _wide_gqa() if wide else tiny_model("llama", seed=4)
    clean, corrupted = pair(6, b=4)
    g = Graph.from_model(model)
    patch = patch_values(model, g, corrupted)
    col = g.receiver_index[receiver]
    layer = g.receivers[col].layer
    start = g.receiver_block(layer)[0] if layer < g.n_layers else col
    gen = torch.Generator().manual_seed(0)
    base = (torch.rand(len(g.senders), len(g.receivers), generator=gen) < 0.6).float() * g.valid
    base[:, :start] = 0  # ACDC's state: receivers before this layer untouched
    masks = base.repeat(6, 1, 1)
    masks[:, :, col] = (torch.rand(6, len(g.senders), generator=gen) < 0.5).float() * g.valid[:, col]
    engine = ResumeForward(model, g, clean, patch, readout=-1)
    assert engine.applies(g.gather(masks), col)
    got = engine.logits(masks, col)
    for v in range(6):
        want = patched_logits(model, g, clean, patch, masks[v], readout=-1)
        assert torch.equal(got[v * 4:(v + 1) * 4], want)
    assert not engine.applies(g.gather(masks.roll(1, dims=2)), col)  # differences outside the column


def test_receivers_subset_gives_the_first_decisions_of_the_full_run() -> None:
    model = tiny_model("gpt2", seed=5)
    clean, corrupted = pair(7)
    kw = dict(method="acdc", threshold=0.002)
    full = discover(model, clean, corrupted, logit_diff_metric(), **kw)
    sub = discover(model, clean, corrupted, logit_diff_metric(), receivers=["m1", "logits"], **kw)
    g = full.graph
    tested = [i for i, e in enumerate(g.edges) if e.receiver.name in ("m1", "logits")]
    assert torch.equal(sub.scores[tested], full.scores[tested])
    assert {g.edge_names[i] for i in tested} & sub.kept == {g.edge_names[i] for i in tested} & full.kept
    assert {n for n in g.edge_names if not n.endswith(("->m1", "->logits"))} <= sub.kept
    assert sub.info["receivers_swept"] == 2
    with pytest.raises(ConfigError, match="unknown receiver 'a1.h9<q>'"):
        discover(model, clean, corrupted, logit_diff_metric(), receivers=["a1.h9<q>"], **kw)


def test_masked_sum_variant_rows_do_not_depend_on_their_neighbours() -> None:
    gen = torch.Generator().manual_seed(1)
    d = torch.randn(1, 12, 3, 5, 16, generator=gen)
    masks = (torch.rand(7, 12, 1, generator=gen) < 0.5).float()
    together = masked_sum(d, masks)
    for v in range(7):
        assert torch.equal(together[v], masked_sum(d, masks[v:v + 1])[0])
    per_variant = torch.randn(7, 12, 3, 5, 16, generator=gen)
    both = masked_sum(per_variant, masks)
    for v in range(7):
        assert torch.equal(both[v], masked_sum(per_variant[v:v + 1], masks[v:v + 1])[0])
    torch.testing.assert_close(together[:, 0], torch.einsum("nbpd,vn->vbpd", d[0], masks[..., 0]))
