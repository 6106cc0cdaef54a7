"""Training a grokking run and reading one back: the model, the full-batch loss, the early stop.

``run(cfg, out_dir)`` trains (or resumes) a ``GrokkingConfig`` into a run directory through
``mechscope.train``; ``load_run`` rebuilds the model with the run's latest weights and the same data split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from mechscope.data.tasks.modular import ModularConfig, ModularData, make_modular_data
from mechscope.errors import ConfigError, ModelFileError
from mechscope.experiments.grokking.config import EXPERIMENT, GrokkingConfig, model_config
from mechscope.train import TrainConfig, TrainResult, latest_checkpoint, load_weights, read_metrics, train
from mechscope.train.checkpoint import read_manifest
from mechscope.train.trainer import RUN_FILE


def build(cfg: GrokkingConfig) -> tuple[Any, ModularData]:
    """(freshly initialised model, data) for ``cfg``."""
    from mechscope.models.transformer import HookedTransformer

    data = make_modular_data(ModularConfig(p=cfg.p, train_frac=cfg.train_frac, seed=cfg.seed))
    return HookedTransformer(model_config(cfg), seed=cfg.seed), data


def answer_logits(model: Any, tokens: Tensor) -> Tensor:
    """Logits at the '=' position [batch p].

    A 1-layer model's answer depends on the MLP and unembedding at the last position only, so a hook
    on ``blocks.0.hook_resid_mid`` keeps just that position: the same logits at ~half the cost.
    """
    with model.hooks(fwd=[("blocks.0.hook_resid_mid", lambda x, hook: x[:, -1:])]):
        return model(tokens)[:, -1]


def _loss_fn(model: Any, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    tokens, labels = batch
    logits = answer_logits(model, tokens)
    return F.cross_entropy(logits, labels), {"acc": (logits.argmax(-1) == labels).float().mean()}


def _test_eval(data: ModularData) -> Any:
    tokens, labels = data.tokens[data.test_idx], data.labels[data.test_idx]

    def evaluate(model: Any, step: int) -> dict[str, float]:
        logits = answer_logits(model, tokens)
        return {"test_loss": float(F.cross_entropy(logits, labels)),
                "test_acc": float((logits.argmax(-1) == labels).float().mean())}

    return evaluate


def _stopper(cfg: GrokkingConfig) -> Any:
    if cfg.stop_test_acc is None:
        return None
    first: list[int] = []

    def stop(record: dict[str, Any]) -> bool:
        if not first and record.get("test_acc", 0.0) >= cfg.stop_test_acc:
            first.append(int(record["step"]))
        return bool(first) and record["step"] >= (1 + cfg.stop_margin) * first[0]

    return stop


def run(cfg: GrokkingConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (or resume) a grokking run into ``out_dir``."""
    model, data = build(cfg)
    train_cfg = TrainConfig(steps=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas,
                            warmup_steps=cfg.warmup_steps, eval_every=cfg.eval_every,
                            checkpoint_every=cfg.checkpoint_every, keep_optimizer_state=1, seed=cfg.seed,
                            progress=progress)
    batch = (data.tokens[data.train_idx], data.labels[data.train_idx])
    stop = _stopper(cfg)
    if resume and stop is not None:  # replay the evaluations already logged so the stop rule stays exact
        for rec in read_metrics(out_dir):
            if "test_acc" in rec:
                stop(rec)
    return train(model, _loss_fn, batch, train_cfg, out_dir, callbacks=[_test_eval(data)], experiment=EXPERIMENT,
                 run_config={"grokking": {k: v for k, v in cfg.to_dict().items() if k != "epochs"},
                             "model": model.cfg.to_dict()}, resume=resume, stop=stop)


def read_run_config(run_dir: str | Path) -> GrokkingConfig:
    """The ``GrokkingConfig`` stored in ``<run>/run.json``; errors name what is wrong with the directory."""
    d = Path(run_dir)
    try:
        info = json.loads((d / RUN_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{d / RUN_FILE} is missing: {d} is not a mechscope training run "
                             "(make one with `mechscope grokking train --out DIR`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{d / RUN_FILE} is corrupted: {e}") from e
    if info.get("experiment") != EXPERIMENT:
        raise ConfigError(f"{d} holds a run of experiment {info.get('experiment')!r}, not {EXPERIMENT!r}")
    try:
        stored = dict(info["run_config"]["grokking"])
        latest = latest_checkpoint(d)  # a resumed run may have been extended: its newest steps win
        steps = (read_manifest(latest) if latest is not None else info)["train_config"]["steps"]
        return GrokkingConfig.from_dict({**stored, "epochs": steps})
    except (KeyError, TypeError) as e:
        raise ModelFileError(f"{d / RUN_FILE} has no grokking config ({e})") from e


def load_run(run_dir: str | Path) -> tuple[GrokkingConfig, Any, ModularData]:
    """(config, model with the latest weights, data) of a grokking run directory."""
    cfg = read_run_config(run_dir)
    model, data = build(cfg)
    load_weights(model, run_dir, experiment=EXPERIMENT)
    return cfg, model, data
