"""Counter-based random numbers: every value is a pure function of (seed, step, stream, index).

Why: a toy model trains many *instances* in one batched tensor program, and an instance trained inside a
batch must see exactly the numbers it would see trained alone. A stateful generator cannot give that
without a Python loop over instances; a counter-based generator can: instance ``i`` owns a 32-bit seed,
and the value at (step, stream, element) is ``hash(key(seed_i, step, stream) + element)``. The hash is
Chris Wellons' ``lowbias32`` integer mixer, computed on int64 tensors masked to 32 bits (so wrap-around
of the signed 64-bit multiply never matters) and in place (so it costs about as much as ``torch.rand``).

The numbers are good enough for sampling training data and initial weights, not for cryptography.
Element counters of two instances can overlap for a handful of elements in a step (random 32-bit
offsets); that correlates a few samples and never changes any instance's own stream.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechscope.errors import ConfigError

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # odd constant spreading consecutive steps / streams across the 32-bit space
SEED_LIMIT = 2**31
"""Seeds must lie in ``[0, SEED_LIMIT)``."""


def mix32_(x: Int[Tensor, "..."]) -> Int[Tensor, "..."]:
    """The lowbias32 mixer applied in place to an int64 tensor holding values in ``[0, 2**32)``."""
    x ^= x >> 16
    x.mul_(0x7FEB352D).bitwise_and_(_MASK)
    x ^= x >> 15
    x.mul_(0x846CA68B).bitwise_and_(_MASK)
    x ^= x >> 16
    return x


def check_seeds(seeds: Int[Tensor, " instances"]) -> None:
    """Raise ``ConfigError`` unless every seed is an integer in ``[0, 2**31)``."""
    if seeds.dtype != torch.int64 or seeds.ndim != 1:
        raise ConfigError(f"instance seeds must be a 1-d int64 tensor, got dtype {seeds.dtype} ndim {seeds.ndim}")
    if seeds.numel() and (int(seeds.min()) < 0 or int(seeds.max()) >= SEED_LIMIT):
        raise ConfigError(f"instance seeds must lie in [0, 2**31), got range [{int(seeds.min())}, {int(seeds.max())}]")


def stream_keys(seeds: Int[Tensor, " instances"], step: int, stream: int) -> Int[Tensor, " instances"]:
    """One 32-bit key per instance for (step, stream): independent of how many instances share the batch."""
    k = seeds.clone()
    k ^= (stream * _GOLDEN) & _MASK
    mix32_(k)
    k.add_((step * _GOLDEN) & _MASK).bitwise_and_(_MASK)
    return mix32_(k)


def bits32(seeds: Int[Tensor, " instances"], step: int, stream: int, shape: tuple[int, ...]
           ) -> Int[Tensor, "instances ..."]:
    """Uniform 32-bit integers (as int64) of shape ``[instances, *shape]``; row i depends only on seed i."""
    numel = math.prod(shape)
    keys = stream_keys(seeds, step, stream)
    x = torch.arange(numel, dtype=torch.int64).unsqueeze(0) + keys.unsqueeze(1)
    x.bitwise_and_(_MASK)
    return mix32_(x).view(seeds.shape[0], *shape)


def uniform_pair(seeds: Int[Tensor, " instances"], step: int, stream: int, shape: tuple[int, ...]
                 ) -> tuple[Float[Tensor, "instances ..."], Float[Tensor, "instances ..."]]:
    """Two independent-looking uniform [0, 1) tensors from one hash (high / low 16 bits), float32."""
    x = bits32(seeds, step, stream, shape)
    hi = (x >> 16).to(torch.float32).mul_(1.0 / 65536)
    lo = (x & 0xFFFF).to(torch.float32).mul_(1.0 / 65536)
    return hi, lo


def normal(seeds: Int[Tensor, " instances"], stream: int, shape: tuple[int, ...]
           ) -> Float[Tensor, "instances ..."]:
    """Standard normal samples via Box-Muller on two 32-bit hash streams (step 0 of ``stream``)."""
    u1 = (bits32(seeds, 0, stream, shape).to(torch.float64) + 0.5) / 2**32
    u2 = bits32(seeds, 0, stream + 1, shape).to(torch.float64) / 2**32
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * math.pi * u2)
    return z.to(torch.float32)
