"""Trainer: schedules, initialisation, dead-latent tracking, metrics JSONL, atomic checkpoint + exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mechscope.dictionaries import io
from mechscope.dictionaries.base import TrainContext, geometric_median
from mechscope.dictionaries.train import Trainer, TrainerConfig
from mechscope.dictionaries.train.trainer import expected_norm_scale
from mechscope.errors import ConfigError

from .conftest import D_IN, build


def _data(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(32, D_IN, generator=g) * 3 + 1 for _ in range(n)]


def test_lr_and_sparsity_schedules() -> None:
    cfg = TrainerConfig(total_steps=10, lr=1.0, lr_warmup_steps=2, lr_decay_steps=4, lr_end=0.2,
                        sparsity_warmup_steps=4)
    assert [round(cfg.lr_at(s), 3) for s in range(10)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2]
    assert [cfg.sparsity_scale_at(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    with pytest.raises(ConfigError, match="exceeds total_steps"):
        TrainerConfig(total_steps=3, lr_warmup_steps=2, lr_decay_steps=2)


def test_geometric_median_beats_mean_on_outliers() -> None:
    pts = torch.cat([torch.randn(50, 2) * 0.01, torch.tensor([[100.0, 100.0]])])
    gm = geometric_median(pts)
    assert gm.norm() < 0.1 < pts.mean(0).norm()
    total = (pts - gm).norm(dim=-1).sum()
    for delta in (torch.tensor([0.01, 0.0]), torch.tensor([0.0, -0.01])):
        assert total <= (pts - gm - delta).norm(dim=-1).sum()


def test_initialisation_sets_scale_and_b_dec() -> None:
    d = build("relu", normalize_activations="expected_norm", b_dec_init="mean")
    data = _data(4)
    tr = Trainer(d, TrainerConfig(total_steps=1, progress=False, norm_estimate_batches=2))
    tr.fit(iter(data))
    want = expected_norm_scale(torch.cat(data[:2]), D_IN)
    assert d.cfg.input_scale == pytest.approx(want) and d.cfg.output_scale == pytest.approx(want)
    assert (torch.cat(data[:2]) * want).norm(dim=-1).mean() == pytest.approx(D_IN**0.5, rel=1e-5)
    assert tr.step == 1


def test_dead_latents_tracked() -> None:
    d = build("topk", k=1)
    tr = Trainer(d, TrainerConfig(total_steps=3, progress=False, dead_window_tokens=64))
    tr.fit(iter(_data(3)))
    fired_ever = tr.tokens_since_fired < 96
    assert tr.dead_mask.sum() >= 1 and (tr.dead_mask == (tr.tokens_since_fired >= 64)).all()
    assert fired_ever.any()


def test_unit_norm_decoder_kept() -> None:
    d = build("topk")
    Trainer(d, TrainerConfig(total_steps=3, progress=False, lr=0.1)).fit(iter(_data(3)))
    torch.testing.assert_close(d.W_dec.norm(dim=-1), torch.ones(12))


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "topk"])
def test_resume_is_exact(arch: str, tmp_path: Path) -> None:
    data = _data(6)
    full = build(arch)
    Trainer(full, TrainerConfig(total_steps=6, progress=False)).fit(iter(data))

    part = build(arch)
    cfg = TrainerConfig(total_steps=6, progress=False, out_dir=str(tmp_path), checkpoint_every=3)
    tr = Trainer(part, TrainerConfig(**{**cfg.__dict__, "total_steps": 3}))
    tr.fit(iter(data))
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["step"] == 3
    resumed = build(arch)
    Trainer(resumed, cfg).fit(iter(data))  # resumes at step 3, skipping the 3 batches already seen
    for n, p in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[n], p, rtol=1e-6, atol=1e-7)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    row = json.loads(lines[-1])
    assert row["step"] == 6 and {"l0", "explained_variance", "dead_fraction", "lr"} <= set(row)
    assert io.load(tmp_path / "dictionary").cfg == resumed.cfg
    assert not list((tmp_path / "checkpoints").glob(".*tmp"))  # no temporary left behind
    assert len(list((tmp_path / "checkpoints").glob("step-*"))) == 1


def test_transcoder_trains_on_pairs() -> None:
    d = build("transcoder")
    x = _data(1)[0]
    data = [(x, x[:, :4] * 2)] * 40
    tr = Trainer(d, TrainerConfig(total_steps=40, progress=False, log_every=1, lr=1e-2))
    tr.fit(iter(data))
    assert tr.history[-1]["mse"] < 0.5 * tr.history[0]["mse"]


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu", "gated"])
def test_bfloat16_precision_trains_like_float32(arch: str) -> None:
    """bf16 autocast: float32 parameters throughout, and a reconstruction error within 25% of float32's."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, D_IN, generator=g) @ torch.randn(D_IN, D_IN, generator=g)
    final = {}
    for precision in ("float32", "bfloat16"):
        d = build(arch)
        tr = Trainer(d, TrainerConfig(total_steps=150, lr=3e-3, log_every=10, progress=False, precision=precision))
        tr.fit(x for _ in range(150))
        assert all(p.dtype == torch.float32 for p in d.parameters())
        final[precision] = tr.history[-1]["mse"]
        assert final[precision] < 0.5 * tr.history[0]["mse"]
    assert abs(final["bfloat16"] - final["float32"]) <= 0.25 * final["float32"]
    with pytest.raises(ConfigError, match="precision"):
        TrainerConfig(total_steps=1, precision="float16")


def test_topk_bfloat16_values_are_recomputed_exactly() -> None:
    """Under autocast the dense encode only *chooses* latents; the kept values equal the float32 formula."""
    from mechscope.dictionaries import sparse_ops as so

    d = build("topk")
    x = torch.randn(32, D_IN)
    x_c = d.center(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pre = d.pre_acts(x_c)
    code, vals = d._select(pre, TrainContext(1.0, None, 0))
    assert vals.dtype == torch.bfloat16
    exact = so.exact_pre(code, x_c, d.W_enc, d.b_enc)
    ref = (x_c @ d.W_enc + d.b_enc)[code.rows, code.cols]
    torch.testing.assert_close(exact, ref, rtol=1e-6, atol=1e-6)
