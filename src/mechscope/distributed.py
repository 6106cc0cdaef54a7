"""Process groups for data- and hookpoint-parallel dictionary work, on ``torch.distributed``.

mechscope never starts processes itself: ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) does, and :func:`init_from_env` joins the group it
describes — ``gloo`` on CPU, ``nccl`` when CUDA is there; the code path is the same.

The trainer talks to the group only through a :class:`Sync` (the seam): all-reduce the gradients (mean),
sum counters (which latents fired), gather rows (the first batches that set the input scale and
``b_dec``), and say which rank writes files. :data:`LOCAL` is the single-process ``Sync`` (every method
is the identity), so one code path serves one process and many. ``Sync`` counts the bytes it sends
(``bytes_sent``) so benchmarks can split a step into compute and communication.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from mechscope.errors import ConfigError

T = TypeVar("T")
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job (from the launcher's environment)."""

    rank: int
    world_size: int
    local_rank: int


def env_from(environ: Mapping[str, str] | None = None) -> DistEnv | None:
    """The launcher's ``RANK/WORLD_SIZE/LOCAL_RANK``, or None when not launched by ``torchrun``.

    Raises ``ConfigError`` for a partial or inconsistent environment (``RANK >= WORLD_SIZE``, ...).
    """
    env = os.environ if environ is None else environ
    present = [k for k in _ENV if k in env]
    if not present:
        return None
    missing = [k for k in ("RANK", "WORLD_SIZE") if k not in env]
    if missing:
        raise ConfigError(f"distributed launch environment is incomplete: {missing} unset (torchrun sets "
                          f"{list(_ENV)}); unset all of them to run as one process")
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", env["RANK"]))
    except ValueError as e:
        raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers: {e}") from e
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"need WORLD_SIZE >= 1 and 0 <= RANK < WORLD_SIZE, got RANK={rank} WORLD_SIZE={world}")
    return DistEnv(rank, world, local)


def launched(environ: Mapping[str, str] | None = None) -> bool:
    """True when this process was started by a distributed launcher with more than one rank."""
    env = env_from(environ)
    return env is not None and env.world_size > 1


def init_from_env(backend: str | None = None, timeout_s: float = 600.0) -> Sync:
    """Join the process group the environment describes (no-op for one process); return its ``Sync``.

    ``backend`` defaults to ``nccl`` when CUDA is available, else ``gloo``. If a group already exists its
    size must match ``WORLD_SIZE`` (``ConfigError`` otherwise).
    """
    import datetime

    import torch.distributed as dist

    env = env_from()
    if env is None or env.world_size == 1:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return Sync()
        return LOCAL
    if dist.is_initialized():
        if dist.get_world_size() != env.world_size or dist.get_rank() != env.rank:
            raise ConfigError(f"a process group of world size {dist.get_world_size()} (rank {dist.get_rank()}) "
                              f"is already running, but the environment says WORLD_SIZE={env.world_size} "
                              f"RANK={env.rank}")
        return Sync()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return Sync()


class Sync:
    """Collectives of the current process group (see module docstring); ``LOCAL`` is the one-process case."""

    def __init__(self, local: bool = False) -> None:
        self.local = local
        self.bytes_sent = 0
        self.n_collectives = 0
        if local:
            self.rank, self.world_size = 0, 1
        else:
            import torch.distributed as dist

            if not dist.is_initialized():
                raise ConfigError("no torch.distributed process group; call mechscope.distributed.init_from_env() "
                                  "under torchrun, or use LOCAL")
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    @property
    def is_writer(self) -> bool:
        """Whether this rank writes shared files (checkpoints, metrics, the final dictionary)."""
        return self.rank == 0

    def _count(self, t: Tensor) -> None:
        self.bytes_sent += t.numel() * t.element_size()
        self.n_collectives += 1

    def all_reduce_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace every gradient by its mean over ranks (one flat all-reduce for all of them)."""
        if self.world_size == 1:
            return
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self._count(flat)
        dist.all_reduce(flat)
        flat /= self.world_size
        off = 0
        for g in grads:
            g.copy_(flat[off:off + g.numel()].view_as(g))
            off += g.numel()

    def sum(self, t: Tensor) -> Tensor:
        """``t`` summed over ranks (a new tensor; ``t`` itself is left alone)."""
        if self.world_size == 1:
            return t
        import torch.distributed as dist

        out = t.detach().clone()
        self._count(out)
        dist.all_reduce(out)
        return out

    def gather_rows(self, t: Tensor) -> Tensor:
        """Rows of every rank concatenated in rank order (every rank must pass the same shape)."""
        if self.world_size == 1:
            return t
        import torch.distributed as dist

        shapes: list[Any] = [None] * self.world_size
        dist.all_gather_object(shapes, tuple(t.shape))
        if len(set(shapes)) != 1:
            raise ConfigError(f"ranks hold blocks of different shapes {shapes}; every rank must get the same "
                              f"number of rows (batch size divisible by the world size)")
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        self._count(t)
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def gather_blocks(self, t: Tensor) -> list[Tensor]:
        """Every rank's ``t`` in rank order; first dims may differ, the rest must match (padded all-gather).

        bfloat16 travels as float32 (exact; not every backend reduces bf16), then comes back as bf16.
        """
        if self.world_size == 1:
            return [t]
        import torch.distributed as dist

        n = torch.tensor([t.shape[0]], dtype=torch.int64)
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        dist.all_gather(sizes, n)
        most = int(max(int(s) for s in sizes))
        wire = t.float() if t.dtype == torch.bfloat16 else t
        pad = torch.zeros((most, *t.shape[1:]), dtype=wire.dtype)
        pad[:t.shape[0]] = wire
        parts = [torch.empty_like(pad) for _ in range(self.world_size)]
        self._count(pad)
        dist.all_gather(parts, pad)
        return [p[:int(s)].to(t.dtype) for p, s in zip(parts, sizes)]

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def agree(self, value: T, what: str) -> T:
        """Check that every rank holds the same ``value`` (JSON-like); ``ConfigError`` naming it otherwise."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        got: list[Any] = [None] * self.world_size
        dist.all_gather_object(got, value)
        if any(v != got[0] for v in got):
            raise ConfigError(f"ranks disagree on {what}: {got}; launch every rank with the same flags")
        return value


LOCAL = Sync(local=True)
"""The single-process ``Sync``: no communication, rank 0 of 1."""


def rank_slice(batch: Tensor | tuple[Tensor, ...], sync: Sync) -> Tensor | tuple[Tensor, ...]:
    """This rank's contiguous share of a global batch (rows ``[r*b, (r+1)*b)``, ``b = rows / world``)."""
    if sync.world_size == 1:
        return batch
    parts = batch if isinstance(batch, tuple) else (batch,)
    n = parts[0].shape[0]
    if n % sync.world_size:
        raise ConfigError(f"a batch of {n} rows cannot be split evenly over {sync.world_size} ranks; use a batch "
                          f"size divisible by the world size")
    b = n // sync.world_size
    out = tuple(p[sync.rank * b:(sync.rank + 1) * b] for p in parts)
    return out if isinstance(batch, tuple) else out[0]


def rank_slices(batches: Iterable[Any], sync: Sync) -> Iterator[Any]:
    """Every global batch of ``batches`` cut to this rank's share (see :func:`rank_slice`)."""
    for b in batches:
        yield rank_slice(b, sync)


def owned(items: Sequence[T], sync: Sync) -> list[T]:
    """The items this rank owns when ``items`` are dealt round-robin over the ranks (hookpoint parallelism)."""
    if len(items) < sync.world_size:
        raise ConfigError(f"{len(items)} items cannot be distributed over {sync.world_size} ranks (every rank needs "
                          f"at least one); launch at most {len(items)} ranks")
    return list(items[sync.rank::sync.world_size])


__all__ = ["DistEnv", "LOCAL", "Sync", "env_from", "init_from_env", "launched", "owned", "rank_slice", "rank_slices"]
