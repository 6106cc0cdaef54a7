"""Sparse dictionaries on a real model, end to end: harvest -> train -> evaluate -> Pareto picture.

The pipeline the ``mechscope dict`` commands and the recorded study share:

* :func:`harvest` streams a corpus through the model (``ActivationSource``) into an ``ActivationStore``
  (resumable), once; every training run reads the store.
* :func:`build_dictionary` makes any registered variant from its name and options (only the options
  its config has; anything else is a ``ConfigError``), :func:`train_on_store` trains it through the
  mixing buffer and the one ``Trainer``.
* :func:`eval_tokens` takes held-out sequences (validation split, same position conventions) and
  :func:`evaluate_dir` evaluates a saved dictionary spliced into the model.
* :func:`run_study` trains every variant at several sparsity levels on one store and records
  L0 / FVU / CE-loss-recovered (the Pareto picture in ``docs/dictionaries.md``); :func:`tour_section`
  is the quick version for the tour (it reuses a finished study if one exists).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.activations.source import ActivationSource, SourceConfig
from mechscope.dictionaries.base import Dictionary
from mechscope.errors import ConfigError
from mechscope.io_safety import atomic_write_json

DEFAULT_HOOK = "blocks.15.hook_resid_post"
_SPARSITY_OPTION = {"relu": "l1_coefficient", "gated": "l1_coefficient", "jumprelu": "init_threshold",
                    "topk": "k", "batchtopk": "k", "crosscoder": "l1_coefficient", "transcoder": "k"}
"""Which config field sets the sparsity level of each variant (the study sweeps it). JumpReLU: the initial
threshold, because in runs of a few hundred steps the L0 coefficient barely moves the thresholds (λ = 2, 6, 20
all stayed at L0 ≈ 900 of 1152: docs/dictionaries.md); λ is then fixed by ``StudyConfig.fixed``."""


# -- corpus and tokens ---------------------------------------------------------------------------------
def corpus_split(model: Any, corpus: str, split: str = "train", tokenizer: str = "auto") -> Any:
    """A ``TokenSplit`` of ``corpus`` tokenised for ``model`` (``auto``: SmolLM2's BPE if the vocab fits)."""
    from mechscope.data.corpus import CorpusConfig, load_corpus

    if tokenizer == "auto":
        tokenizer = "smollm2" if model.cfg.d_vocab == 49152 else "bytes"
    if tokenizer == "bytes" and model.cfg.d_vocab < 257:
        raise ConfigError(f"the byte tokenizer needs d_vocab >= 257, this model has {model.cfg.d_vocab}")
    if split not in ("train", "val"):
        raise ConfigError(f"split must be 'train' or 'val', got {split!r}")
    return getattr(load_corpus(CorpusConfig(source=corpus, tokenizer=tokenizer)), split)  # type: ignore[arg-type]


def eval_tokens(model: Any, corpus: str = "stdlib-docs", *, split: str = "val", n_seq: int = 16,
                seq_len: int = 128, tokenizer: str = "auto", seed: int = 0) -> Tensor:
    """``n_seq`` held-out sequences ``[n_seq seq_len]`` formed as the harvest forms them (BOS policy)."""
    src = ActivationSource(model, ["hook_embed"], corpus_split(model, corpus, split, tokenizer),
                           SourceConfig(seq_len=seq_len, seed=seed))
    if src.n_sequences < n_seq:
        raise ConfigError(f"{corpus}/{split} holds only {src.n_sequences} sequences of {seq_len} tokens")
    return src.sequences(0, n_seq)


def harvest(model: Any, hooks: Sequence[str], n_tokens: int, out: str | Path, *, corpus: str = "stdlib-docs",
            seq_len: int = 128, batch_size: int = 16, tokenizer: str = "auto", shard_rows: int = 65536,
            seed: int = 0, model_name: str | None = None, progress: bool = True, dtype: str = "float32") -> Any:
    """Harvest ``n_tokens`` rows of ``hooks`` from the training split into a store at ``out`` (resumable).

    ``dtype`` is the store's (``bfloat16`` halves the disk); the model's own dtype is recorded in the manifest.
    """
    split = corpus_split(model, corpus, "train", tokenizer)
    src = ActivationSource(model, hooks, split, SourceConfig(seq_len=seq_len, batch_size=batch_size, seed=seed))
    model_dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return src.harvest(out, n_tokens, shard_rows=shard_rows, progress=progress, dtype=dtype,
                       metadata={"model": model_name, "corpus": corpus, "split": "train", "model_dtype": model_dtype})


# -- training ------------------------------------------------------------------------------------------
def build_dictionary(arch: str, *, d_in: int, d_sae: int, hook_name: str | None, model_name: str | None,
                     options: dict[str, Any] | None = None) -> Dictionary:
    """A fresh ``arch`` dictionary; ``options`` (None values ignored) must be fields of its config."""
    from mechscope.dictionaries.registry import create, dictionary_class

    cls = dictionary_class(arch).config_class
    fields = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in (options or {}).items() if v is not None}
    wrong = sorted(set(given) - fields)
    if wrong:
        raise ConfigError(f"options {wrong} do not apply to {arch!r}; its config has {sorted(fields)}")
    return create(cls(d_in=d_in, d_sae=d_sae, hook_name=hook_name, model_name=model_name, **given))


def read_block_rows(n_rows: int) -> int:
    """Rows per block read into the mixing buffer (a store drops a short final block: keep blocks <= its rows)."""
    return max(1, min(8192, n_rows))


def dictionary_for(arch: str, names: Sequence[str], widths: Sequence[int], *, d_sae: int,
                   options: dict[str, Any] | None, model_name: str | None) -> Dictionary:
    """A fresh ``arch`` dictionary reading hooks ``names`` of row widths ``widths`` (as ``dict train`` builds it)."""
    opts = {"normalize_activations": "expected_norm", **(options or {})}
    if arch == "transcoder":
        opts |= {"d_out": int(widths[1]), "target_hook_name": names[1]}
    if arch == "crosscoder":
        opts["n_layers"] = len(names)
    if arch == "clt":
        n = clt_layers(names)
        opts |= {"n_layers": n, "d_out": int(widths[n]), "hook_names": tuple(names[:n]),
                 "target_hook_names": tuple(names[n:])}
    return build_dictionary(arch, d_in=int(widths[0]), d_sae=d_sae,
                            hook_name=names[0] if arch not in ("crosscoder", "clt") else None,
                            model_name=model_name, options=opts)


def clt_hook_names(n_layers: int) -> list[str]:
    """The hooks a CLT over all ``n_layers`` MLPs reads: every MLP input, then every MLP output."""
    return ([f"blocks.{i}.ln2.hook_normalized" for i in range(n_layers)]
            + [f"blocks.{i}.hook_mlp_out" for i in range(n_layers)])


def clt_layers(names: Sequence[str]) -> int:
    """Number of layers of a CLT reading ``names`` = its input hooks then its target hooks (``ConfigError``
    unless there are as many of each, at least one)."""
    if len(names) < 2 or len(names) % 2:
        raise ConfigError(f"a CLT reads n input hooks then n target hooks (an even number >= 2), got {len(names)}: "
                          f"{list(names)}; `--hooks all` takes every MLP's input and output")
    return len(names) // 2


def _stream(store: Any, hooks: list[str], kind: str, batch_size: int, capacity: int, seed: int,
            epochs: int, shuffle_shards: bool = True) -> Iterator[Tensor | tuple[Tensor, ...]]:
    blocks = store.batches(read_block_rows(store.n_rows), hooks=hooks, shuffle_shards=shuffle_shards, seed=seed,
                           epochs=epochs)
    return mix(blocks, kind, batch_size, capacity, seed)


def mix(blocks: Any, kind: str, batch_size: int, capacity: int, seed: int) -> Iterator[Tensor | tuple[Tensor, ...]]:
    """Training batches from row blocks through the mixing buffer (crosscoders stack their hooks)."""
    from mechscope.activations.buffer import mixing_buffer

    for b in mixing_buffer(blocks, capacity=capacity, batch_size=batch_size, seed=seed):
        if kind == "crosscoder":
            yield torch.stack(list(b), dim=1)
        elif kind == "clt":  # (inputs [B L d_in], targets [B L d_out]); rows of a bf16 model train in float32
            n = len(b) // 2
            yield torch.stack(list(b[:n]), dim=1).float(), torch.stack(list(b[n:]), dim=1).float()
        else:
            yield b


def train_on_store(store_dir: str | Path, out_dir: str | Path, arch: str, *, d_sae: int,
                   options: dict[str, Any] | None = None, hooks: Sequence[str] | None = None,
                   batch_size: int = 4096, steps: int | None = None, epochs: int = 1, lr: float = 4e-4,
                   buffer_rows: int = 2**17, seed: int = 0, progress: bool = True,
                   precision: str = "float32", sync: Any = None, shuffle_shards: bool = True,
                   estimate: bool = False) -> Dictionary:
    """Train an ``arch`` dictionary on a store (resumes if ``out_dir`` holds a checkpoint).

    ``hooks``: one hook (SAE variants), ``[input, target]`` (transcoder), several (crosscoder), or n inputs then
    n targets (clt);
    default: the store's only hook. ``steps`` defaults to one pass over ``epochs`` x the store.
    ``precision``: ``float32`` or ``bfloat16`` (autocast; see ``TrainerConfig.precision``).
    ``sync``: a ``mechscope.distributed.Sync`` for data-parallel training (every rank reads the same global
    batches and steps on its share; default: one process). ``estimate``: print what the run needs (peak RAM,
    tokens/s from a 3-step calibration) to stderr first and refuse a run that cannot fit (``estimate.py``).
    """
    from mechscope.activations.store import ActivationStore
    from mechscope.dictionaries.train import Trainer

    store = ActivationStore.open(store_dir)
    names = list(hooks) if hooks else store.hooks[:1]
    if arch == "transcoder" and len(names) != 2:
        raise ConfigError(f"a transcoder needs hooks [input, target], got {names}")
    if any(h not in store.manifest["hooks"] for h in names):
        raise ConfigError(f"hooks {names} are not all in the store; it has {store.hooks}")
    widths = [int(store.manifest["hooks"][h][-1]) for h in names]
    meta = store.manifest["metadata"]
    d = dictionary_for(arch, names, widths, d_sae=d_sae, options=options,
                       model_name=meta.get("source", {}).get("metadata", {}).get("model"))
    total = steps or max(1, store.n_rows * epochs // batch_size)
    cfg = trainer_config(total, batch_size, lr=lr, out_dir=out_dir, seed=seed, precision=precision,
                         progress=progress and (sync is None or sync.is_writer))
    data = _stream(store, names, arch, batch_size, max(buffer_rows, 2 * batch_size), seed,
                   epochs=math.ceil(total * batch_size / max(store.n_rows, 1)) + 1, shuffle_shards=shuffle_shards)
    from mechscope.distributed import LOCAL, rank_slices

    sync = sync or LOCAL
    if batch_size % sync.world_size:
        raise ConfigError(f"--batch-size {batch_size} must be divisible by the world size {sync.world_size}")
    if estimate:
        from mechscope.experiments.estimate import announce, train_estimate

        announce(train_estimate(d, store.n_rows * epochs, out_dir, batch_size=batch_size // sync.world_size,
                                buffer_rows=max(buffer_rows, 2 * batch_size), row_bytes=4 * sum(widths), steps=total,
                                precision=precision), sync.is_writer)
    trainer = Trainer(d, cfg, sync)
    data = rank_slices(data, sync)
    trainer.fit(data)  # type: ignore[arg-type]  # tuples are (input, target) pairs for transcoders
    if trainer.step < total:
        raise ConfigError(f"the activation stream ran out after {trainer.step} of {total} steps (store of "
                          f"{store.n_rows} rows, batch {batch_size}); the partial dictionary is in {out_dir}")
    return trainer.dictionary


def trainer_config(total: int, batch_size: int, *, lr: float, out_dir: str | Path, seed: int, precision: str,
                   progress: bool) -> Any:
    """The ``TrainerConfig`` of ``dict train`` runs (schedules scaled to ``total`` steps)."""
    from mechscope.dictionaries.train import TrainerConfig

    return TrainerConfig(total_steps=total, lr=lr, lr_warmup_steps=min(50, total // 10),
                         lr_decay_steps=total // 5, sparsity_warmup_steps=total // 20,
                         dead_window_tokens=max(batch_size, min(1_000_000, total * batch_size // 4)),
                         out_dir=str(out_dir), checkpoint_every=max(1, total // 4), progress=progress,
                         seed=seed, precision=precision)


def load_dictionary_dir(path: str | Path) -> Dictionary:
    """A saved dictionary from its directory, or from a training ``out_dir`` (its ``dictionary/``)."""
    from mechscope.dictionaries import io

    p = Path(path)
    return io.load(p / "dictionary" if (p / "dictionary").is_dir() else p)


# -- the study -----------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """Variants x sparsity levels trained on one harvested store and evaluated on held-out text."""

    store: str = "runs/dictionaries/acts-l15"
    """Harvested activations (``mechscope dict harvest``)."""
    out: str = "runs/dictionaries/study"
    """Where each run and ``results.json`` go."""
    d_sae: int = 2304
    """Dictionary size (4 x d_model of SmolLM2; 8x is twice the training cost)."""
    grid: dict[str, tuple[float, ...]] = field(default_factory=lambda: {
        "topk": (16, 32, 64), "batchtopk": (16, 32, 64), "relu": (1.5, 4.0, 10.0),
        "jumprelu": (0.25, 0.5, 1.0), "gated": (3.0, 8.0, 20.0)})
    """Per architecture, the values of its sparsity option (see ``_SPARSITY_OPTION``)."""
    fixed: dict[str, dict[str, float]] = field(default_factory=lambda: {"jumprelu": {"l0_coefficient": 6.0}})
    """Per architecture, options held fixed across its sweep."""
    epochs: int = 1
    """Passes over the store per run."""
    batch_size: int = 1024
    """Training batch (tokens)."""
    lr: float = 1e-3
    """Peak learning rate (short runs: a few hundred steps)."""
    eval_seqs: int = 8
    """Held-out sequences for the evaluation."""
    eval_seq_len: int = 128
    """Tokens per evaluation sequence."""
    corpus: str = "stdlib-docs"
    """Corpus whose validation split is evaluated (the store's corpus)."""
    precision: str = "float32"
    """Training precision (``float32`` or ``bfloat16`` autocast)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.grid) - set(_SPARSITY_OPTION))
        if unknown:
            raise ConfigError(f"StudyConfig.grid has unknown architectures {unknown}; allowed {sorted(_SPARSITY_OPTION)}")


def run_study(cfg: StudyConfig, model: Any, *, progress: bool = True) -> list[dict[str, Any]]:
    """Train (or reuse) every run of the grid, evaluate them together, write ``results.json``."""
    from mechscope.dictionaries.evals import EvalConfig, evaluate_many

    out = Path(cfg.out)
    rows: list[dict[str, Any]] = []
    dictionaries = []
    for arch, values in cfg.grid.items():
        for v in values:
            opt = _SPARSITY_OPTION[arch]
            value = int(v) if opt == "k" else float(v)
            run_dir = out / f"{arch}-{opt}-{value}"
            t0 = time.time()
            if not (run_dir / "dictionary" / "config.json").is_file():
                options = {**cfg.fixed.get(arch, {}), opt: value}
                train_on_store(cfg.store, run_dir, arch, d_sae=cfg.d_sae, options=options, batch_size=cfg.batch_size, epochs=cfg.epochs, lr=cfg.lr, progress=progress,
                               precision=cfg.precision)
            dictionaries.append(load_dictionary_dir(run_dir))
            rows.append({"arch": arch, opt: value, "option": opt, "value": value, "run": str(run_dir),
                         "train_seconds": round(time.time() - t0, 1)})
    tokens = eval_tokens(model, cfg.corpus, n_seq=cfg.eval_seqs, seq_len=cfg.eval_seq_len)
    results = evaluate_many(model, dictionaries, tokens, cfg=EvalConfig(batch_size=4), progress=progress)
    for row, res in zip(rows, results):
        row.update({k: v for k, v in res.to_dict().items() if k != "density_histogram"})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", rows)
    return rows


__all__ = ["harvest", "eval_tokens", "corpus_split", "build_dictionary", "train_on_store", "load_dictionary_dir",
           "StudyConfig", "run_study", "DEFAULT_HOOK"]
