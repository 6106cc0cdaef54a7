"""Test-only launcher: run a function on N local gloo ranks (127.0.0.1, a free port, one thread each).

The library never starts processes (``torchrun`` does); tests use ``torch.multiprocessing.spawn`` here,
which sets the same environment variables ``torchrun`` sets and joins the group through
``mechscope.distributed.init_from_env`` like the CLI does.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    import torch

    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    import torch.distributed as dist

    from mechscope.distributed import init_from_env

    sync = init_from_env(backend="gloo", timeout_s=60)
    try:
        fn(sync, *args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(world: int, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(sync, *args)`` on ``world`` ranks; raises if any rank fails (the others are then ended)."""
    import torch.multiprocessing as mp

    mp.spawn(_entry, args=(world, free_port(), fn, args), nprocs=world, join=True)
