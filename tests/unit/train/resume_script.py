"""A tiny training run for the SIGKILL/resume test, run as a subprocess.

usage: python resume_script.py RUN_DIR [--resume] [--kill-in-step K] [--kill-in-checkpoint K]

The model has dropout (torch RNG), the loss adds python-``random`` and numpy noise, and batches are
shuffled mini-batches (``RandomBatches``), so every piece of state the trainer restores matters.
``--kill-in-step K`` SIGKILLs the process in the middle of update K; ``--kill-in-checkpoint K`` SIGKILLs
it while checkpoint K is written (after its files, before the rename that publishes it).
"""

from __future__ import annotations

import os
import random
import signal
import sys

import numpy as np
import torch
from torch import nn

from mechscope.train import RandomBatches, TrainConfig, train
from mechscope.train import checkpoint as ck


def main() -> None:
    torch.set_num_threads(1)
    args = sys.argv[1:]
    run_dir = args[0]
    kill_step = int(args[args.index("--kill-in-step") + 1]) if "--kill-in-step" in args else None
    kill_ckpt = int(args[args.index("--kill-in-checkpoint") + 1]) if "--kill-in-checkpoint" in args else None
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(16, 24), nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(32, 16))
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 16, (96, 2), generator=g)
    y = (x[:, 0] + x[:, 1]) % 16
    calls = [0]

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        calls[0] += 1
        xb, yb = batch
        logits = m(xb)
        noise = random.random() * 1e-3 + float(np.random.rand()) * 1e-3
        if kill_step is not None and step_of(calls[0]) == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)
        loss = nn.functional.cross_entropy(logits, yb) + noise
        return loss, {"acc": float((logits.argmax(-1) == yb).float().mean())}

    start = [0]

    def step_of(call: int) -> int:
        return start[0] + call - 1

    if kill_ckpt is not None:
        real_replace = ck.os.replace

        def replace(src: str, dst: str) -> None:
            if str(dst).endswith(f"step_{kill_ckpt:08d}"):
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)

        ck.os.replace = replace  # type: ignore[assignment]

    resume = "--resume" in args
    if resume:
        start[0] = ck.read_manifest(ck.latest_checkpoint(run_dir))["step"]

    def evaluate(m: nn.Module, step: int) -> dict[str, float]:
        return {"eval_loss": float(nn.functional.cross_entropy(m(x), y))}

    cfg = TrainConfig(steps=40, lr=3e-3, weight_decay=0.1, warmup_steps=5, schedule="cosine", eval_every=10,
                      checkpoint_every=10, keep_optimizer_state=None, seed=3, progress=False, grad_clip=1.0)
    train(model, loss_fn, RandomBatches(x, y, batch_size=16, seed=7), cfg, run_dir, callbacks=[evaluate],
          experiment="resume-test", run_config={"n": 96}, resume=resume)


if __name__ == "__main__":
    main()
