"""Grokking of modular addition, end to end: train a 1-layer transformer, then reverse-engineer it.

Following Nanda et al. (2023): a 1-layer transformer (d_model 128, 4 heads × 32, d_mlp 512, ReLU, no
LayerNorm, no biases) is trained full-batch with AdamW on a fraction of the ``a + b mod p`` pairs. It
first memorises the training pairs (train accuracy 100%, test accuracy near chance), then, pushed by
weight decay, forms a Fourier-multiplication circuit and "groks" (test accuracy → 100%). The analysis
(``mechscope.analysis.fourier``) finds the key frequencies and tracks progress measures over checkpoints.

Presets (``PRESETS``): ``paper`` is the paper's setting (30% of pairs, lr 1e-3, weight decay 1, 40k
epochs: hours on a CPU); ``fast`` (the default) groks within minutes on 2 cores by raising the learning
rate tenfold (see ``FAST`` below) and stops a while after test accuracy passes 99%.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mechscope.data.tasks.modular import ModularConfig, ModularData, make_modular_data
from mechscope.errors import ConfigError, ModelFileError
from mechscope.train import (
    TrainConfig,
    TrainResult,
    latest_checkpoint,
    list_checkpoints,
    load_weights,
    read_metrics,
    train,
)
from mechscope.train.checkpoint import read_manifest
from mechscope.train.trainer import RUN_FILE
from mechscope.validation import build as build_config
from mechscope.validation import check_types

EXPERIMENT = "grokking"


@dataclass(frozen=True, kw_only=True)
class GrokkingConfig:
    """Task, model and optimiser of one grokking run."""

    p: int = 113
    """Modulus."""
    train_frac: float = 0.3
    """Fraction of the p² pairs used for training."""
    seed: int = 0
    """Seeds the split, the initialisation and the trainer."""
    epochs: int = 40_000
    """Full-batch updates."""
    lr: float = 1e-3
    """AdamW learning rate (after a 10-step linear warm-up)."""
    weight_decay: float = 1.0
    """AdamW weight decay: what drives the memorising solution out."""
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW betas."""
    warmup_steps: int = 10
    """Linear warm-up length."""
    d_model: int = 128
    """Residual width."""
    n_heads: int = 4
    """Attention heads."""
    d_head: int = 32
    """Head dimension."""
    d_mlp: int = 512
    """MLP neurons (ReLU)."""
    eval_every: int = 10
    """Measure test loss/accuracy every N epochs."""
    checkpoint_every: int = 100
    """Write a checkpoint every N epochs (the analysis runs over all of them)."""
    stop_test_acc: float | None = None
    """If set, stop once test accuracy has reached this value and ``stop_margin`` more training has passed."""
    stop_margin: float = 0.25
    """After reaching ``stop_test_acc`` at epoch e, continue until epoch ``(1 + stop_margin) * e``."""

    def __post_init__(self) -> None:
        check_types(self)
        ModularConfig(p=self.p, train_frac=self.train_frac, seed=self.seed)  # validates p / train_frac
        for f in ("epochs", "d_model", "n_heads", "d_head", "d_mlp", "eval_every", "checkpoint_every"):
            v = getattr(self, f)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{f} must be a positive int, got {v!r}")
        if self.stop_test_acc is not None and not 0 < self.stop_test_acc <= 1:
            raise ConfigError(f"stop_test_acc must be in (0, 1] or None, got {self.stop_test_acc}")
        if self.stop_margin < 0:
            raise ConfigError(f"stop_margin must be >= 0, got {self.stop_margin}")

    def replace(self, **changes: Any) -> GrokkingConfig:
        """A copy with fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GrokkingConfig:
        """Inverse of ``to_dict``; unknown keys, missing fields and wrong types raise ``ConfigError``."""
        return build_config(cls, d, "run.json grokking config: ")


PAPER = GrokkingConfig()
"""Nanda et al.'s setting: p=113, 30% train, lr 1e-3, wd 1.0, betas (0.9, 0.98), 40k full-batch epochs."""
FAST = GrokkingConfig(lr=1e-2, epochs=3000, eval_every=10, checkpoint_every=50, stop_test_acc=0.99,
                      stop_margin=0.4)
"""Same task, model, 30% split and weight decay; 10× the learning rate, so memorisation takes ~60 epochs
and grokking a few hundred; stops 40% after test accuracy first reaches 99% (the clean-up phase)."""
QUICK = GrokkingConfig(p=31, train_frac=0.5, lr=1e-2, weight_decay=2.0, epochs=1500, d_mlp=256, eval_every=10,
                       checkpoint_every=25, stop_test_acc=0.99, stop_margin=0.3)
"""A small-p run for tests and the tour (≈400 epochs, well under a minute on a CPU)."""
PRESETS: dict[str, GrokkingConfig] = {"fast": FAST, "paper": PAPER, "quick": QUICK}


def model_config(cfg: GrokkingConfig) -> Any:
    """The paper's 1-layer model for modulus ``cfg.p`` (vocabulary p numbers + '=', p outputs)."""
    from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig, PositionalConfig

    return ModelConfig(d_model=cfg.d_model, n_layers=1, d_vocab=cfg.p + 1, d_vocab_out=cfg.p, n_ctx=3,
                       attention=AttentionConfig(n_heads=cfg.n_heads, d_head=cfg.d_head),
                       mlp=MLPConfig(d_mlp=cfg.d_mlp, act="relu", bias=False), norm=NormConfig(kind="none"),
                       positional=PositionalConfig(kind="learned"), name=f"grokking-p{cfg.p}", architecture="toy")


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


def _first_step(records: list[dict[str, Any]], key: str, threshold: float) -> int | None:
    return next((int(r["step"]) for r in records if (r.get(key) or 0.0) >= threshold), None)


def _first_below(history: list[dict[str, Any]], key: str, threshold: float) -> int | None:
    return next((int(r["step"]) for r in history if r[key] < threshold), None)


def analyze(run_dir: str | Path, *, max_checkpoints: int = 60) -> dict[str, Any]:
    """The summary JSON of a finished run plus per-checkpoint progress measures (key ``history``)."""
    from mechscope.analysis.fourier import (
        embedding_freq_norms,
        key_fraction,
        key_frequencies,
        neuron_freq_fractions,
        progress_measures,
    )

    t0 = time.perf_counter()
    cfg, model, data = load_run(run_dir)
    p = cfg.p
    records = read_metrics(run_dir)
    energy = embedding_freq_norms(model.W_E[:p])
    keys = key_frequencies(energy)
    acts = _final_acts(model, data)
    fracs = neuron_freq_fractions(acts)  # [d_mlp p//2+1]
    neuron_r2 = fracs[:, keys].max(-1).values
    final = progress_measures(model, data, keys)
    ckpts = list_checkpoints(run_dir)
    stride = max(1, -(-len(ckpts) // max_checkpoints))
    history = []
    for step, path in ckpts[::stride] + ([ckpts[-1]] if (len(ckpts) - 1) % stride else []):
        load_weights(model, path, experiment=EXPERIMENT)
        history.append({"step": step, **progress_measures(model, data, keys, ablate_nonkey=False)})
    last = read_manifest(ckpts[-1][1])
    return {"analysis_version": ANALYSIS_VERSION, "p": p, "train_acc": final["train_acc"], "test_acc": final["test_acc"],
            "epochs": int(last["step"]),
            "epoch_train_100": _first_step(records, "acc", 1.0), "epoch_test_99": _first_step(records, "test_acc", 0.99),
            "epoch_restricted_loss_below_1": _first_below(history, "restricted_loss", 1.0),
            "epoch_test_loss_below_1": _first_below(history, "test_loss", 1.0),
            "key_frequencies": keys, "embed_key_freq_fraction": key_fraction(energy, keys),
            "neuron_key_freq_r2": float(neuron_r2.median()), "train_loss": final["train_loss"],
            "test_loss": final["test_loss"], "restricted_loss": final["restricted_loss"],
            "excluded_loss": final["excluded_loss"], "logit_trig_cosine": final["logit_trig_cosine"],
            "ablated_nonkey_test_loss": final["ablated_nonkey_test_loss"],
            "wall_seconds": float(last.get("wall_seconds", 0.0)), "analysis_seconds": time.perf_counter() - t0,
            "settings": cfg.to_dict(), "embed_freq_energy": energy[1:].tolist(), "history": history}


def _final_acts(model: Any, data: ModularData) -> Tensor:
    """MLP activations at '=' over all pairs, [p p d_mlp]."""
    _, cache = model.run_with_cache(data.tokens, names=["blocks.0.mlp.hook_post"])
    return cache["blocks.0.mlp.hook_post"][:, -1].reshape(data.p, data.p, -1)


ANALYSIS_FILE = "analysis.json"
ANALYSIS_VERSION = 2  # bump when analyze() output changes, so cached summaries are recomputed


def cached_analysis(run_dir: str | Path, *, max_checkpoints: int = 60) -> dict[str, Any]:
    """``analyze`` once per final checkpoint: reuse ``<run>/analysis.json`` when it matches, else write it."""
    from mechscope.train.checkpoint import atomic_write

    d = Path(run_dir)
    load_run(d)  # verifies the experiment and the final checkpoint's hashes even when the cache is used
    ckpts = list_checkpoints(d)
    path = d / ANALYSIS_FILE
    if ckpts and path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("epochs") == ckpts[-1][0] and cached.get("analysis_version") == ANALYSIS_VERSION:
                return cached
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass  # recompute below
    summary = analyze(d, max_checkpoints=max_checkpoints)
    atomic_write(path, lambda p: p.write_text(json.dumps(summary), encoding="utf-8"))
    return summary


def tour_section(out_dir: Path, model: Any = None) -> Any:
    """A report section: reuse ``runs/grokking`` if it is a finished run, else a quick small-p run (≈30 s)."""
    from mechscope.experiments.grokking_plots import report_section

    out_dir = Path(out_dir)
    run_dir = Path("runs/grokking")
    note = "recorded p=113 run from runs/grokking"
    try:
        summary = cached_analysis(run_dir)
    except (ModelFileError, ConfigError, FileNotFoundError, IndexError):
        run_dir = out_dir / "grokking-quick"
        cfg = QUICK
        if run_dir.exists() and list_checkpoints(run_dir):
            import shutil

            shutil.rmtree(run_dir)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny matmuls: extra threads only add contention on a busy CPU
        try:
            run(cfg, run_dir, progress=False)
            summary = analyze(run_dir)
        finally:
            torch.set_num_threads(threads)
        note = f"quick run (p={cfg.p}, {cfg.train_frac:.0%} train, lr {cfg.lr}, wd {cfg.weight_decay})"
    return report_section(run_dir, summary, note)

