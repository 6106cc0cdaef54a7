"""The counter-based RNG: per-instance streams independent of batch composition, sane distributions."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import ConfigError
from mechscope.toy import counter_rng
from tests.typecheck import ill_typed


def test_rows_depend_only_on_their_own_seed() -> None:
    seeds = torch.tensor([5, 17, 3, 900], dtype=torch.int64)
    full = counter_rng.bits32(seeds, step=7, stream=3, shape=(16, 4))
    for k in range(4):
        alone = counter_rng.bits32(seeds[k:k + 1], step=7, stream=3, shape=(16, 4))
        assert torch.equal(full[k:k + 1], alone)


def test_streams_steps_and_seeds_differ() -> None:
    seeds = torch.tensor([1, 2], dtype=torch.int64)
    a = counter_rng.bits32(seeds, 0, 3, (64,))
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a, counter_rng.bits32(seeds, 1, 3, (64,)))
    assert not torch.equal(a, counter_rng.bits32(seeds, 0, 5, (64,)))
    assert int(a.min()) >= 0 and int(a.max()) < 2**32


def test_uniform_and_normal_moments() -> None:
    seeds = torch.arange(4, dtype=torch.int64)
    hi, lo = counter_rng.uniform_pair(seeds, 0, 3, (20000,))
    for u in (hi, lo):
        assert float(u.min()) >= 0 and float(u.max()) < 1
        assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005
    assert abs(float(torch.corrcoef(torch.stack([hi.flatten(), lo.flatten()]))[0, 1])) < 0.02
    z = counter_rng.normal(seeds, 1, (20000,))
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02


def test_bad_seeds_are_rejected() -> None:
    with pytest.raises(ConfigError, match="2\\*\\*31"):
        counter_rng.check_seeds(torch.tensor([-1], dtype=torch.int64))
    with pytest.raises(ConfigError, match="int64"), ill_typed():
        counter_rng.check_seeds(torch.tensor([1.0]))
