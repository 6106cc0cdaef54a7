"""``Trainer``: one training loop for every dictionary variant, fed by a plain iterator of batches.

Each batch is a tensor ``[batch d_in]`` (an SAE reconstructs it), a tensor ``[batch n_layers d_in]``
(crosscoder) or a pair ``(input, target)`` (transcoder). The first batches set the input scale (when the
config asks for ``expected_norm``) and ``b_dec``. Every step: variant loss -> backward -> the variant's
decoder-gradient projection -> gradient clipping -> Adam with the scheduled learning rate -> the
variant's decoder renormalisation -> dead-latent bookkeeping. The sparsity coefficient and learning rate
follow ``TrainerConfig`` schedules.

Checkpoints are directories ``checkpoints/step-NNNNNNN/`` holding the dictionary (our format), the Adam
moments and the dead-latent counters as ``optimizer.safetensors`` and every scalar (step, tokens, Adam
step counts and hyper-parameters) as ``trainer_state.json``: no pickle anywhere. A directory is written
under a unique temporary name, fsynced and renamed; then ``checkpoints/latest.json`` is atomically replaced
to point at it, and only then are older checkpoints pruned (``checkpoints.py``), so a kill at any moment
leaves a complete checkpoint to resume from. ``fit`` resumes from the newest one, drops ``metrics.jsonl``
rows logged after it (each step appears once), and holds the lock of ``out_dir`` while it writes.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.dictionaries import io
from mechscope.dictionaries.base import Dictionary, TrainContext, TrainOutput
from mechscope.dictionaries.train import checkpoints as ckpt
from mechscope.dictionaries.train.config import TrainerConfig
from mechscope.distributed import LOCAL, Sync
from mechscope.errors import ModelFileError, ShapeError
from mechscope.io_safety import crash_point, dir_lock

Batch = Tensor | tuple[Tensor, Tensor]


def _split(batch: Batch) -> tuple[Tensor, Tensor]:
    if isinstance(batch, (tuple, list)):
        if len(batch) != 2:
            raise ShapeError(f"a training batch tuple must be (input, target), got {len(batch)} items")
        return batch[0], batch[1]
    return batch, batch


class Trainer:
    """Train ``dictionary`` with ``cfg``; see the module docstring.

    Example:
        >>> from mechscope.dictionaries.topk import TopKConfig, TopKDictionary
        >>> from mechscope.dictionaries.train import Trainer, TrainerConfig
        >>> sae = TopKDictionary(TopKConfig(d_in=8, d_sae=32, k=2))
        >>> batches = (torch.randn(64, 8) for _ in range(5))
        >>> trained = Trainer(sae, TrainerConfig(total_steps=5, progress=False)).fit(batches)
    """

    def __init__(self, dictionary: Dictionary, cfg: TrainerConfig, sync: Sync = LOCAL) -> None:
        self.dictionary = dictionary
        self.cfg = cfg
        self.sync = sync  # data parallel: each rank steps on its share of the global batch (distributed.py)
        self.optimizer = torch.optim.Adam(dictionary.parameters(), lr=cfg.lr,
                                          betas=(cfg.adam_beta1, cfg.adam_beta2))
        self.step = 0
        self.tokens = 0
        self.tokens_since_fired = torch.zeros(dictionary.cfg.d_sae, dtype=torch.int64)
        self.history: list[dict[str, float]] = []
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir is not None else None
        self._saved_step: int | None = None  # the step last checkpointed or restored (same on every rank)

    # -- public ---------------------------------------------------------------------------------------
    @property
    def dead_mask(self) -> Tensor:
        """Bool ``[d_sae]``: latents silent for at least ``dead_window_tokens`` tokens."""
        return self.tokens_since_fired >= self.cfg.dead_window_tokens

    def fit(self, data: Iterable[Batch]) -> Dictionary:
        """Train until ``total_steps`` (resuming from ``out_dir`` if it holds a checkpoint)."""
        for _ in self.fit_steps(data):
            pass
        return self.dictionary

    def fit_steps(self, data: Iterable[Batch]) -> Iterator[int]:
        """``fit`` one step at a time: yields the step count after each optimiser step.

        Lets one loop drive several trainers in lockstep over one stream (hookpoint parallelism fed by the
        model); the run is finished (final checkpoint and dictionary written) when the generator is exhausted.
        """
        # data parallel: rank 0 alone writes, so it alone holds the directory lock
        lock = (dir_lock(self.out_dir, "dictionary training") if self.out_dir is not None and self.sync.is_writer
                else contextlib.nullcontext())
        with lock:
            yield from self._fit(data)

    def _fit(self, data: Iterable[Batch]) -> Iterator[int]:
        from tqdm.auto import tqdm

        torch.manual_seed(self.cfg.seed)
        it: Iterator[Batch] = iter(data)
        if self.out_dir is not None and self.load_checkpoint() and self.cfg.skip_seen_batches:
            it = itertools.islice(it, self.step, None)
        if self.out_dir is not None and self.sync.is_writer:
            ckpt.truncate_metrics(self.out_dir, self.step)  # rows after the checkpoint are logged again
        if self.step == 0:
            it = self._initialise(it)
        bar = tqdm(total=self.cfg.total_steps, initial=self.step, disable=not self.cfg.progress, desc="dictionary")
        t_last, tok_last = time.perf_counter(), self.tokens
        try:
            while self.step < self.cfg.total_steps:
                batch = next(it, None)
                if batch is None:
                    break
                x, target = _split(batch)
                out = self.train_step(x, target)
                if self.step % self.cfg.log_every == 0 or self.step == self.cfg.total_steps:
                    now = time.perf_counter()
                    row = self._log(out, target, (self.tokens - tok_last) / max(now - t_last, 1e-9))
                    t_last, tok_last = now, self.tokens
                    bar.set_postfix(l0=f"{row['l0']:.1f}", ev=f"{row['explained_variance']:.3f}",
                                    dead=f"{row['dead_fraction']:.3f}")
                bar.update(1)
                crash_point("dict_trainer.after_step")
                if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                yield self.step
        finally:
            bar.close()
        if self.out_dir is not None:
            if self._saved_step != self.step:  # the last step may already be checkpointed (decided in memory,
                # so every rank takes the same branch and meets the same barriers)
                self.save_checkpoint()
            if self.sync.is_writer:
                ckpt.publish_final(self.out_dir, lambda d: io.write_files(self.dictionary, d))
            self.sync.barrier()

    def train_step(self, x: Tensor, target: Tensor) -> TrainOutput:
        """One optimiser step on ``x`` predicting ``target``; returns the step's losses."""
        d, cfg = self.dictionary, self.cfg
        logs = (self.step + 1) % cfg.log_every == 0 or self.step + 1 == cfg.total_steps
        ctx = TrainContext(cfg.sparsity_scale_at(self.step), self.dead_mask if self.step else None, self.step, logs,
                           self.sync if self.sync.world_size > 1 else None)
        with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bfloat16"):
            out = d.training_losses(x, target, ctx)
        out.loss.backward()
        self.sync.all_reduce_grads(d.parameters())
        d.before_optimizer_step()
        if cfg.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(d.parameters(), cfg.grad_clip_norm)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr_at(self.step)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        d.after_optimizer_step()
        n = x.shape[0] * self.sync.world_size
        self.tokens_since_fired += n
        self.tokens_since_fired[self.sync.sum(out.fired).cpu() > 0] = 0
        self.tokens += n
        self.step += 1
        return out

    # -- initialisation -------------------------------------------------------------------------------
    def _initialise(self, it: Iterator[Batch]) -> Iterator[Batch]:
        """Estimate the input scale and ``b_dec`` from the first batches (which are then trained on)."""
        d = self.dictionary
        head = list(itertools.islice(it, max(self.cfg.norm_estimate_batches, 1)))
        if not head:
            return it
        xs = self.sync.gather_rows(torch.cat([_split(b)[0] for b in head]))
        ts = self.sync.gather_rows(torch.cat([_split(b)[1] for b in head]))
        if d.cfg.normalize_activations == "expected_norm":
            d.check_input(xs)
            s_in = expected_norm_scale(xs, d.cfg.d_in)
            s_out = s_in if ts is xs or torch.equal(ts, xs) else expected_norm_scale(ts, ts.shape[-1])
            d.with_config(input_scale=s_in, output_scale=s_out)
            d.init_output_scales(ts)
        d.init_b_dec(self.sync.gather_rows(_split(head[0])[1]))
        return itertools.chain(head, it)

    # -- logging ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _log(self, out: TrainOutput, target: Tensor, tokens_per_s: float) -> dict[str, float]:
        t = self.dictionary.scale_target(target).reshape(target.shape[0], -1).double()
        var = float((t - t.mean(0)).pow(2).sum()) / t.shape[0]
        row = {"step": self.step, "tokens": self.tokens, "loss": float(out.loss), "mse": float(out.mse),
               "sparsity_loss": float(out.sparsity), "aux_loss": float(out.aux), "l0": float(out.l0),
               "explained_variance": 1.0 - float(out.mse) / max(var, 1e-30),
               "dead_fraction": float(self.dead_mask.float().mean()), "lr": self.cfg.lr_at(self.step - 1),
               "sparsity_scale": self.cfg.sparsity_scale_at(self.step - 1), "tokens_per_s": tokens_per_s}
        self.history.append(row)
        if self.out_dir is not None and self.sync.is_writer:
            ckpt.append_metrics(self.out_dir, row)
        return row

    # -- checkpoints ------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-N`` atomically, point ``latest.json`` at it, then prune (``checkpoints.py``)."""
        if self.out_dir is None:
            raise ModelFileError("TrainerConfig.out_dir is None; set it to save checkpoints")
        root = self.out_dir / "checkpoints"
        if not self.sync.is_writer:  # every rank holds the same state; rank 0 writes it
            self._saved_step = self.step
            self.sync.barrier()
            return root / f"step-{self.step:07d}"
        tensors, scalars = _optimizer_to_files(self.optimizer)
        tensors["tokens_since_fired"] = self.tokens_since_fired
        state = {"step": self.step, "tokens": self.tokens, "optimizer": scalars, "history": self.history[-1:]}
        final = ckpt.write_checkpoint(self.out_dir, self.step, lambda d: io.write_files(self.dictionary, d),
                                      tensors, state, self.cfg.keep_checkpoints)
        self._saved_step = self.step
        self.sync.barrier()
        return final

    def load_checkpoint(self) -> bool:
        """Restore from the newest complete checkpoint in ``out_dir`` (``latest.json``'s); False if none."""
        assert self.out_dir is not None
        where = ckpt.find_latest(self.out_dir)
        if where is None:
            return False
        saved = io.load(where, d_in=self.dictionary.cfg.d_in)
        if type(saved) is not type(self.dictionary):
            raise ModelFileError(f"{where} holds a {saved.cfg.architecture} dictionary, not "
                                 f"{self.dictionary.cfg.architecture}; use another out_dir")
        self.dictionary.load_state_dict(saved.state_dict())
        self.dictionary.cfg = saved.cfg
        state = io.read_json(where / ckpt.STATE)
        tensors = io.read_tensors(where / ckpt.OPTIM)
        self.tokens_since_fired = tensors.pop("tokens_since_fired")
        self.optimizer.load_state_dict(_optimizer_from_files(tensors, state["optimizer"]))
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        self._saved_step = self.step
        return True


def expected_norm_scale(x: Tensor, width: int) -> float:
    """Scale making the mean L2 norm of rows ``sqrt(width)`` (Anthropic's input normalisation)."""
    mean_norm = float(x.reshape(-1, width).double().norm(dim=-1).mean())
    return (width ** 0.5) / mean_norm if mean_norm > 0 else 1.0


def _optimizer_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (safetensors) and JSON scalars; no pickle."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    steps: dict[str, float] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if key == "step":
                steps[str(idx)] = float(val)
            else:
                tensors[f"state.{idx}.{key}"] = val
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "steps": steps}


def _optimizer_from_files(tensors: dict[str, Tensor], scalars: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Tensor]] = {}
    for name, val in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = val
    for idx, step in scalars["steps"].items():
        state.setdefault(int(idx), {})["step"] = torch.tensor(float(step))
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in scalars["param_groups"]]
    return {"state": state, "param_groups": groups}


__all__ = ["Trainer", "expected_norm_scale"]
