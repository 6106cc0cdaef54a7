"""The trainer: AdamW on any ``nn.Module`` with a loss function and a batch source, resumable bit-exactly.

Usage (the whole API)::

    from mechscope.train import TrainConfig, train, RandomBatches, ReplayIterator

    def loss_fn(model, batch):                       # -> loss, or (loss, {"acc": float, ...})
        tokens = batch
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        return loss, {"acc": float((logits.argmax(-1) == tokens[:, 1:]).float().mean())}

    def eval_fn(model, step):                        # called under no_grad, model.eval()
        return {"test_loss": ...}                    # merged into the metrics record

    result = train(model, loss_fn, data, TrainConfig(steps=5000, lr=1e-3, weight_decay=0.1,
                   warmup_steps=100, schedule="cosine", eval_every=250, checkpoint_every=500),
                   run_dir="runs/x", callbacks=[eval_fn], experiment="induction",
                   run_config={"model": model.cfg.to_dict(), ...})
    # later, after a crash or SIGKILL:   train(..., resume=True) continues from checkpoints/latest

``data`` is a ``BatchSource`` (``RandomBatches(tokens, batch_size=32, seed=0)``; your own class with
``next_batch/state/load_state``), a zero-argument factory of a deterministic iterator (wrapped in
``ReplayIterator``: on resume it is re-created and the consumed batches skipped), or any other object
(a tensor, a tuple of tensors), which is then the full batch given to every update.

Step semantics: record ``step = s`` holds the training loss of update ``s`` (computed on the weights
after ``s`` updates, before the update) and the callbacks' metrics on those same weights; a final
record ``step = steps`` holds the callbacks' metrics on the final weights. Checkpoints are named by the
number of updates done. ``run_dir`` gets ``run.json`` (experiment + configs), ``metrics.jsonl`` and
``checkpoints/step_XXXXXXXX/`` (see ``train/checkpoint.py``).

Exactness: a resumed run restores weights, AdamW state, the learning-rate step, the torch/python/numpy
RNG states and the batch source position, so it ends with bit-identical weights to an uninterrupted run
on the same machine, torch version and thread count (floating-point reductions depend on those).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mechscope.errors import ConfigError, ModelFileError
from mechscope.io_safety import crash_point, dir_lock
from mechscope.train import checkpoint as ck
from mechscope.train.batches import BatchSource, as_batch_source
from mechscope.train.config import RESUMABLE_CHANGES, TrainConfig
from mechscope.train.progress import MetricsLog, Progress

LossOutput = Tensor | tuple[Tensor, Mapping[str, float | Tensor]]
LossFn = Callable[[nn.Module, Any], LossOutput]
Callback = Callable[[nn.Module, int], Mapping[str, float] | None]
RUN_FILE = "run.json"


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` returns."""

    run_dir: Path
    """The run directory."""
    step: int
    """Updates done when training stopped."""
    last: dict[str, Any]
    """The last metrics record (the final evaluation)."""
    wall_seconds: float
    """Wall time summed over the original run and every resume."""
    resumed_from: int | None
    """The checkpoint step this call resumed from, or None for a fresh run."""
    stopped_early: bool
    """True when ``stop`` ended the run before ``config.steps``."""


def train(model: nn.Module, loss_fn: LossFn, data: Any, config: TrainConfig, run_dir: str | os.PathLike[str], *,
          callbacks: Sequence[Callback] = (), experiment: str = "custom", run_config: Mapping[str, Any] | None = None,
          resume: bool = False, stop: Callable[[Mapping[str, Any]], bool] | None = None) -> TrainResult:
    """Train ``model`` in place (see the module docstring); returns a ``TrainResult``.

    Args:
        model: any module; its parameters are optimised by AdamW.
        loss_fn: ``loss_fn(model, batch)`` → scalar loss, or (loss, {metric: float}).
        data: a ``BatchSource``, an iterator factory, or a fixed full batch.
        config: optimiser, schedule and cadence.
        run_dir: where metrics and checkpoints go; a fresh run needs an empty or new directory.
        callbacks: ``fn(model, step) -> {metric: float}``, run every ``config.eval_every`` updates.
        experiment: a name stored in every checkpoint; resuming or analysing a directory made by another
            experiment raises ``ConfigError``.
        run_config: the caller's JSON-able description (model config, task...), stored and checked on resume.
        resume: continue from ``run_dir``'s latest checkpoint (a run killed before its first checkpoint
            starts over in the same directory, if its ``run.json`` matches these settings).
        stop: ``stop(record)`` on each evaluation record; True ends the run there (early stopping).
    """
    run = Path(run_dir)
    with dir_lock(run, f"mechscope.train ({experiment})"):
        return _train_locked(model, loss_fn, data, config, run, callbacks, experiment, run_config, resume, stop)


def _train_locked(model: nn.Module, loss_fn: LossFn, data: Any, config: TrainConfig, run: Path,
                  callbacks: Sequence[Callback], experiment: str, run_config: Mapping[str, Any] | None,
                  resume: bool, stop: Callable[[Mapping[str, Any]], bool] | None) -> TrainResult:
    run_cfg = json.loads(json.dumps(dict(run_config or {})))  # normalise tuples etc. to JSON values
    source = as_batch_source(data)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas, eps=config.eps,
                            weight_decay=config.weight_decay)
    metrics = MetricsLog(run)
    if resume and ck.latest_checkpoint(run) is None and (run / RUN_FILE).is_file():
        _check_run_file(run, config, experiment, run_cfg)  # killed before its first checkpoint: start over
        resume = False
        _seed(config)
        start, wall0 = 0, 0.0
        metrics.truncate_from(0)
    elif resume:
        start, wall0 = _restore(run, model, opt, source, config, experiment, run_cfg)
        metrics.truncate_from(start)
    else:
        _start_fresh(run, config, experiment, run_cfg)
        start, wall0 = 0, 0.0
    loop = _Loop(model, loss_fn, source, opt, config, run, callbacks, metrics, stop,
                 {"experiment": experiment, "run_config": run_cfg}, wall0)
    try:
        return loop.run(start, resumed_from=start if resume else None)
    finally:
        metrics.close()


def _check_run_file(run: Path, config: TrainConfig, experiment: str, run_cfg: dict[str, Any]) -> None:
    """A run without checkpoints may be restarted only with the settings in its ``run.json``."""
    try:
        info = json.loads((run / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{run / RUN_FILE} is unreadable ({e}); delete it to start the run afresh") from e
    if info.get("experiment") != experiment:
        raise ConfigError(f"{run} is a run of experiment {info.get('experiment')!r}, not {experiment!r}; "
                          "point at a run directory made by this experiment")
    _check_same(info.get("run_config", {}), run_cfg, "run_config", run / RUN_FILE)
    saved = {k: v for k, v in info.get("train_config", {}).items() if k not in RESUMABLE_CHANGES}
    now = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
    _check_same(saved, now, "train config", run / RUN_FILE)


def _seed(config: TrainConfig) -> None:
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)


def _start_fresh(run: Path, config: TrainConfig, experiment: str, run_cfg: dict[str, Any]) -> None:
    if (run / RUN_FILE).exists() or ck.list_checkpoints(run):
        raise ConfigError(f"{run} already holds a training run; pass resume=True (`--resume` in the CLI) to "
                          "continue it, or choose a new directory")
    run.mkdir(parents=True, exist_ok=True)
    info = {"experiment": experiment, "train_config": config.to_dict(), "run_config": run_cfg}
    ck.atomic_write(run / RUN_FILE, lambda p: p.write_text(json.dumps(info, indent=1), encoding="utf-8"))
    _seed(config)


def _restore(run: Path, model: nn.Module, opt: torch.optim.Optimizer, source: BatchSource, config: TrainConfig,
             experiment: str, run_cfg: dict[str, Any]) -> tuple[int, float]:
    """Load the latest checkpoint into model/optimiser/RNGs/data; returns (step, wall seconds so far)."""
    from mechscope.models.transformer import load_state

    latest = ck.latest_checkpoint(run)
    if latest is None:
        raise ConfigError(f"cannot resume: {run} has no checkpoints (expected {run}/checkpoints/latest); "
                          "start a fresh run instead")
    c = ck.read_checkpoint(latest, experiment=experiment)
    if c.state is None:
        raise ModelFileError(f"{latest} holds weights only (its optimiser state was pruned); cannot resume from it")
    m = c.manifest
    _check_same(m.get("run_config", {}), run_cfg, "run_config", latest)
    saved = {k: v for k, v in m.get("train_config", {}).items() if k not in RESUMABLE_CHANGES}
    now = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
    _check_same(saved, now, "train config", latest)
    try:
        load_state(model, c.weights, source=str(latest / "model.safetensors"))
        ck.optimizer_from_tensors(opt, m["optimizer"], c.state)
        ck.set_rng_state(m["rng"], c.state)
        source.load_state(m["data"], {k[5:]: v for k, v in c.state.items() if k.startswith("data.")})
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{latest} is incomplete or inconsistent ({type(e).__name__}: {e})") from e
    return c.step, float(m.get("wall_seconds", 0.0))


def _check_same(saved: Mapping[str, Any], now: Mapping[str, Any], what: str, where: Path) -> None:
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        shown = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}" for k in diff[:4])
        raise ConfigError(f"cannot resume from {where}: the {what} differs ({shown}); resume with the "
                          "same settings or start a new run directory")


class _Loop:
    """The update loop; a class only to keep each step of it short."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, source: BatchSource, opt: torch.optim.Optimizer,
                 cfg: TrainConfig, run: Path, callbacks: Sequence[Callback], metrics: MetricsLog,
                 stop: Callable[[Mapping[str, Any]], bool] | None, ident: dict[str, Any], wall0: float) -> None:
        self.model, self.loss_fn, self.source, self.opt, self.cfg = model, loss_fn, source, opt, cfg
        self.run_dir, self.callbacks, self.metrics, self.stop, self.ident = run, callbacks, metrics, stop, ident
        self.wall0, self.t0 = wall0, time.perf_counter()

    def wall(self) -> float:
        return self.wall0 + time.perf_counter() - self.t0

    def run(self, start: int, resumed_from: int | None) -> TrainResult:
        cfg = self.cfg
        bar = Progress(cfg.steps, start, cfg.progress)
        end, stopped, record = cfg.steps, False, {}
        self.model.train()
        try:
            for step in range(start, cfg.steps):
                record = {"step": step}
                evaluated = cfg.eval_every is not None and step % cfg.eval_every == 0
                if evaluated:
                    record.update(self.evaluate(step))
                    if self.stop is not None and self.stop(record):
                        end, stopped = step, True
                        self.log(record)
                        break
                record.update(self.update(step))
                if evaluated or step % cfg.log_every == 0:
                    self.log(record)
                bar.update(record)
                crash_point("train.after_update")
                if cfg.checkpoint_every is not None and (step + 1) % cfg.checkpoint_every == 0:
                    self.save(step + 1)
            if not stopped:
                record = {"step": end, **self.evaluate(end)}
                self.log(record)
        finally:
            bar.close()
        if not ck.list_checkpoints(self.run_dir) or ck.list_checkpoints(self.run_dir)[-1][0] != end:
            self.save(end)
        return TrainResult(self.run_dir, end, record, self.wall(), resumed_from, stopped)

    def evaluate(self, step: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for cb in self.callbacks:
                    res = cb(self.model, step)
                    out.update({k: _scalar(v) for k, v in (res or {}).items()})
        finally:
            self.model.train(was_training)
        return out

    def update(self, step: int) -> dict[str, Any]:
        lr = self.cfg.lr_at(step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        batch = self.source.next_batch()
        device_type = next(self.model.parameters()).device.type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bfloat16"):
            out = self.loss_fn(self.model, batch)
        loss, extra = (out, {}) if isinstance(out, Tensor) else out
        if loss.dim() != 0:
            raise ConfigError(f"loss_fn must return a scalar loss, got shape {tuple(loss.shape)}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        rec: dict[str, Any] = {"lr": lr, "loss": float(loss.detach())}
        if self.cfg.grad_clip is not None:
            rec["grad_norm"] = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip))
        self.opt.step()
        rec.update({k: _scalar(v) for k, v in extra.items()})
        return rec

    def log(self, record: Mapping[str, Any]) -> None:
        self.metrics.append({**record, "wall": round(self.wall(), 3)})

    def save(self, step: int) -> None:
        opt_meta, opt_tensors = ck.optimizer_to_tensors(self.opt)
        rng_meta, rng_tensors = ck.rng_state()
        data_meta, data_tensors = self.source.state()
        state = {**opt_tensors, **rng_tensors, **{f"data.{k}": v for k, v in data_tensors.items()}}
        manifest = {**self.ident, "train_config": self.cfg.to_dict(), "optimizer": opt_meta, "rng": rng_meta,
                    "data": data_meta, "wall_seconds": self.wall(), "torch_version": torch.__version__,
                    "threads": torch.get_num_threads()}
        weights = {k: v.detach() for k, v in self.model.state_dict().items()}
        ck.write_checkpoint(self.run_dir, step, weights, state, manifest)
        ck.prune_states(self.run_dir, self.cfg.keep_optimizer_state)


def _scalar(v: Any) -> Any:
    if isinstance(v, Tensor):
        v = v.detach()
        return float(v) if v.numel() == 1 else v.tolist()
    return v


def load_weights(model: nn.Module, path: str | os.PathLike[str], *, experiment: str | None = None) -> int:
    """Load weights into ``model`` from a checkpoint directory or a run directory (its latest checkpoint).

    Returns the checkpoint's step. Verifies hashes; ``experiment`` (if given) must match the checkpoint's.
    """
    from mechscope.models.transformer import load_state

    p = Path(path)
    d = p if (p / "state.json").is_file() else ck.latest_checkpoint(p)
    if d is None:
        raise ModelFileError(f"{p} is neither a checkpoint directory nor a run directory with checkpoints")
    c = ck.read_checkpoint(d, experiment=experiment, with_state=False)
    load_state(model, c.weights, source=str(d / "model.safetensors"))
    return c.step
