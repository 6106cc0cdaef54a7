"""The sinusoidal position table: the formula, and "one position back" as one linear map for every position."""

from __future__ import annotations

import math

import pytest
import torch

from mechscope.models.components.embed import sinusoidal_table


def test_sinusoidal_table_matches_the_formula() -> None:
    t = sinusoidal_table(50, 8)
    p, i = 37, 3
    w = 10000.0 ** (-2 * i / 8)
    assert t.shape == (50, 8)
    assert t[p, 2 * i].item() == pytest.approx(math.sin(p * w), abs=1e-6)
    assert t[p, 2 * i + 1].item() == pytest.approx(math.cos(p * w), abs=1e-6)
    assert torch.allclose(t.pow(2).mean(1), torch.full((50,), 0.5), atol=1e-6)  # RMS 1/sqrt(2) per row


def test_previous_position_is_one_linear_map_of_the_table() -> None:
    """Rows p-1 = rows p @ R for every p (a block rotation), which random rows do not allow once n_ctx > d."""
    n, d = 256, 32
    t = sinusoidal_table(n, d).double()
    r = torch.linalg.lstsq(t[1:], t[:-1]).solution
    assert (t[1:] @ r - t[:-1]).abs().max() < 1e-6
    rnd = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    r2 = torch.linalg.lstsq(rnd[1:], rnd[:-1]).solution
    assert (rnd[1:] @ r2 - rnd[:-1]).pow(2).mean() > 0.5 * rnd.pow(2).mean()


def test_sinusoidal_table_rejects_odd_widths() -> None:
    with pytest.raises(ValueError, match="even d_model"):
        sinusoidal_table(10, 7)


def test_induction_pos_init_writes_the_scaled_table() -> None:
    from mechscope.errors import ConfigError
    from mechscope.experiments.induction.config import InductionConfig, model_config
    from mechscope.experiments.induction.run import _sinusoidal_positions
    from mechscope.models.transformer import HookedTransformer, init_std

    cfg = InductionConfig(d_model=16, n_heads=2, d_head=8, n_ctx=64, pos_init="sinusoidal")
    model = HookedTransformer(model_config(cfg, 2, 100), seed=0)
    _sinusoidal_positions(model)
    assert torch.allclose(model.W_pos, sinusoidal_table(64, 16) * init_std(16) * math.sqrt(2))
    assert model.W_pos.pow(2).mean().sqrt().item() == pytest.approx(init_std(16), rel=1e-5)
    with pytest.raises(ConfigError, match="pos_init"):
        InductionConfig(pos_init="zeros")
