"""``ResidualTail`` reproduces the full forward and full-model interchanges, from cached residuals."""

from __future__ import annotations

import pytest
import torch

from mechscope.abstraction.das import InterchangeData, iia, random_rotation
from mechscope.abstraction.interchange import block_masks, interchange, swap_hook
from mechscope.abstraction.tail import ResidualTail
from mechscope.errors import ConfigError, ShapeError
from tests.conftest import tiny_model
from tests.typecheck import ill_typed


def _setup():
    model = tiny_model("llama", seed=3)  # rotary positions: the cached keys must keep absolute positions
    tokens = torch.randint(0, model.cfg.d_vocab, (6, 9), generator=torch.Generator().manual_seed(0))
    cands = torch.randint(0, model.cfg.d_vocab, (6, 2), generator=torch.Generator().manual_seed(1))
    return model, tokens, cands


def test_tail_equals_full_forward_and_full_interchange() -> None:
    model, tokens, cands = _setup()
    with torch.no_grad():
        full = model(tokens)[:, -1]
    for layer, start in [(0, 0), (0, 5), (1, 8)]:
        tail = ResidualTail(model, tokens, layer, start, cands)
        ids = torch.tensor([4, 0, 2])
        with torch.no_grad():
            assert torch.allclose(tail(ids), full[ids].gather(1, cands[ids]), atol=1e-4)
        # swapping a rotated 3-dim subspace at position `start` = the same swap on the whole model
        d = model.cfg.d_model
        rot, masks = random_rotation(d, seed=layer), block_masks(d, [3])
        src = torch.tensor([1, 3, 5])
        want = interchange(model, tokens[ids], [tokens[src]], f"blocks.{layer}.hook_resid_post", rotation=rot,
                           masks=masks, positions=[start])[:, -1]
        src_acts = tail.resid[src]
        with torch.no_grad(), tail.hooks(fwd=[("hook_resid", swap_hook([src_acts], rot, masks, [0]))]):
            got = tail(ids)
        assert torch.allclose(got, want.gather(1, cands[ids]), atol=1e-4)


def test_tail_iia_of_full_swap_is_one() -> None:
    """Swapping the whole last-position residual after the last block makes the base read like the source."""
    model, tokens, cands = _setup()
    tail = ResidualTail(model, tokens, 1, 8, cands)
    base, src = torch.arange(6), torch.tensor([1, 2, 3, 4, 5, 0])
    with torch.no_grad():
        logits = model(tokens)[:, -1]
    labels = logits[src].gather(1, cands[base]).argmax(-1)  # the source's preference among the base's candidates
    d = model.cfg.d_model
    data = InterchangeData(base, [src], labels)
    assert iia(tail, "hook_resid", data, torch.eye(d), torch.ones(1, d), positions=[0]) == 1.0
    noop = InterchangeData(base, [base], logits.gather(1, cands).argmax(-1))
    assert iia(tail, "hook_resid", noop, random_rotation(d), block_masks(d, [4]), positions=[0]) == 1.0


def test_tail_bad_input() -> None:
    model, tokens, cands = _setup()
    with pytest.raises(ConfigError, match="layer must be"):
        ResidualTail(model, tokens, 5, 0)
    with pytest.raises(ConfigError, match="start position"):
        ResidualTail(model, tokens, 0, 9)
    with ill_typed(), pytest.raises(ShapeError, match="candidates has 2 rows"):
        ResidualTail(model, tokens, 0, 0, cands[:2])
