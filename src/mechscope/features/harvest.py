"""The feature harvest: one pass over a corpus -> per-feature statistics -> the feature database.

Token sequences come from an ``ActivationSource`` (the same sequence forming and position policy as
``mechscope dict harvest``); each batch runs the model up to the feature set's hook (``stop_at_layer``),
encodes the activations and folds them into ``stats`` accumulators. Every ``checkpoint_every`` batches the
accumulators and their position are saved as one checkpoint directory published whole (``state_dir/<run>/
checkpoint``, safetensors + JSON; the run's state directory is locked while it runs) and the progress is committed to
the ``runs`` table; a killed harvest rerun with the same arguments resumes from the last checkpoint, redoing
only the batches after it, so the result equals an uninterrupted run. At the end, logit effects and
neighbours are computed and every feature and example row is written in ONE transaction (after deleting the
dictionary's old rows), so readers see either the previous harvest or the complete new one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.activations.source import ActivationSource, SourceConfig, stop_layer
from mechscope.dictionaries.io import atomic_save_tensors, atomic_write_json, read_json, read_tensors
from mechscope.errors import ConfigError
from mechscope.features.db import FeatureDB
from mechscope.features.source import FeatureSet
from mechscope.features.stats import StatsConfig, new_state, quantile_groups, update
from mechscope.io_safety import dir_lock, recover_dir, write_dir


@dataclass(frozen=True, kw_only=True)
class HarvestConfig:
    """What one harvest measures and how."""

    n_tokens: int
    """Tokens to harvest (rounded up to whole sequences; position 0 of each sequence is not counted)."""
    seq_len: int = 64
    """Tokens per sequence."""
    batch_size: int = 16
    """Sequences per forward pass."""
    seed: int = 0
    """Seed of the corpus chunk order."""
    checkpoint_every: int = 8
    """Batches between checkpoints of the accumulators."""
    n_logits: int = 10
    """Top and bottom logit effects kept per feature."""
    n_neighbours: int = 10
    """Nearest neighbours kept per feature (by write-direction cosine, and by co-activation Jaccard)."""
    stats: StatsConfig = field(default_factory=StatsConfig)
    """Sizes of the per-feature state."""

    def __post_init__(self) -> None:
        for name in ("n_tokens", "seq_len", "batch_size", "checkpoint_every", "n_logits", "n_neighbours"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"HarvestConfig.{name} must be a positive int, got {v!r}")
        if self.seq_len < 2:
            raise ConfigError(f"HarvestConfig.seq_len must be >= 2, got {self.seq_len}")


def _run_id(features: FeatureSet, model_name: str, cfg: HarvestConfig, tokens_desc: dict[str, Any]) -> str:
    ident = json.dumps({"features": features.name, "hook": features.hook, "model": model_name,
                        "cfg": asdict(cfg), "tokens": tokens_desc}, sort_keys=True, default=str)
    return "harvest-" + hashlib.sha256(ident.encode()).hexdigest()[:16]


def _capture(model: Any, hook: str, tokens: Tensor, stop: int | None) -> Tensor:
    got: dict[str, Tensor] = {}

    def save(x: Tensor, hook: Any) -> None:
        got["x"] = x

    with model.hooks(fwd=[(hook, save)]):
        model(tokens, stop_at_layer=stop)
    return got["x"]


def _pieces(model: Any, ids: list[int]) -> list[str]:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return [str(i) for i in ids]
    vocab = tok.vocab_size
    return [tok.to_str_tokens([i])[0] if 0 <= i < vocab else f"<{i}>" for i in ids]


class _Vocab:
    """Token id -> display string, cached (the tokenizer decodes one id at a time)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.cache: dict[int, str] = {}

    def __call__(self, ids: list[int]) -> list[str]:
        missing = sorted({i for i in ids if i not in self.cache})
        if missing:
            self.cache.update(zip(missing, _pieces(self.model, missing), strict=True))
        return [self.cache[i] for i in ids]


def logit_effects(model: Any, features: FeatureSet, n: int, chunk: int = 256) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top / bottom ``n`` logit effects ``(values, token ids)`` of each write direction ``[F n]`` (W_U only)."""
    w_u = model.W_U.detach().float()
    tv, ti, bv, bi = [], [], [], []
    for s in range(0, features.n_features, chunk):
        logits = features.directions[s:s + chunk].float() @ w_u
        k = min(n, logits.shape[1])
        t, b = logits.topk(k, dim=1), logits.topk(k, dim=1, largest=False)
        tv.append(t.values)
        ti.append(t.indices)
        bv.append(b.values)
        bi.append(b.indices)
    return torch.cat(tv), torch.cat(ti), torch.cat(bv), torch.cat(bi)


def cosine_neighbours(directions: Tensor, n: int, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """The ``n`` most similar other features by cosine of their write directions ``([F n], [F n])``."""
    unit = directions.float() / directions.float().norm(dim=1, keepdim=True).clamp_min(1e-12)
    k = min(n, unit.shape[0] - 1)
    vals, idx = [], []
    for s in range(0, unit.shape[0], chunk):
        sims = unit[s:s + chunk] @ unit.T
        sims[torch.arange(sims.shape[0]), torch.arange(s, s + sims.shape[0])] = float("-inf")
        top = sims.topk(k, dim=1)
        vals.append(top.values)
        idx.append(top.indices)
    return torch.cat(vals), torch.cat(idx)


def coact_neighbours(coact: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The ``n`` features most often firing together with each (Jaccard of their firing sets)."""
    coact = coact.double()
    fired = coact.diagonal()
    union = fired[:, None] + fired[None, :] - coact
    jac = torch.where(union > 0, coact / union.clamp_min(1), torch.zeros_like(coact))
    jac.fill_diagonal_(-1.0)
    top = jac.topk(min(n, coact.shape[0] - 1), dim=1)
    return top.values, top.indices


class Harvester:
    """A resumable harvest of one feature set into a database (see the module docstring)."""

    def __init__(self, model: Any, features: FeatureSet, db: FeatureDB, cfg: HarvestConfig, *, model_name: str,
                 state_dir: str | os.PathLike[str], tokens: Any) -> None:
        self.model, self.features, self.db, self.cfg, self.model_name = model, features, db, cfg, model_name
        self.source = ActivationSource(model, [features.hook], tokens,
                                       SourceConfig(seq_len=cfg.seq_len, batch_size=cfg.batch_size, seed=cfg.seed))
        per_seq = int(self.source.keep_mask(self.source.sequences(0, 1)).sum())
        self.n_sequences = -(-cfg.n_tokens // max(per_seq, 1))
        if self.n_sequences > self.source.n_sequences:
            raise ConfigError(f"the corpus holds {self.source.n_sequences} sequences of {cfg.seq_len} tokens "
                              f"({self.source.n_sequences * per_seq} tokens), fewer than the {cfg.n_tokens} asked")
        self.seq_len = int(self.source.sequences(0, 1).shape[1])
        self.stop = stop_layer([features.hook], model.cfg.n_layers)
        self.run_id = _run_id(features, model_name, cfg, self.source.describe())
        self.state_dir = Path(state_dir) / self.run_id
        self.run_config = {"features": features.name, "hook": features.hook, "model": model_name,
                           "harvest": asdict(cfg), "source": self.source.describe()}

    # -- checkpoints ---------------------------------------------------------------------------------
    # The accumulators and the position they reached are one checkpoint directory, published whole
    # (io_safety.write_dir): a kill between writing the state and writing its position can then never pair a
    # newer state with an older position (which would fold the batches in between twice on resume).
    _CHECKPOINT_FILES = {"state.safetensors", "progress.json"}

    def _load(self) -> tuple[dict[str, Tensor], int, bool]:
        ckpt = self.state_dir / "checkpoint"
        recover_dir(ckpt)
        progress = ckpt / "progress.json"
        if progress.is_file():
            meta = read_json(progress)
            if meta.get("run") != json.loads(json.dumps(self.run_config, default=str)):
                raise ConfigError(f"{self.state_dir} holds another harvest's state; delete it or use another "
                                  "--state-dir")
            return read_tensors(ckpt / "state.safetensors"), int(meta["next_sequence"]), bool(meta["written"])
        return new_state(self.features.n_features, self.cfg.stats), 0, False

    def _save(self, state: dict[str, Tensor], next_seq: int, written: bool) -> None:
        def write(d: Path) -> None:
            atomic_save_tensors(d / "state.safetensors", state)
            atomic_write_json(d / "progress.json", {"run": json.loads(json.dumps(self.run_config, default=str)),
                                                    "next_sequence": next_seq, "written": written})

        write_dir(self.state_dir / "checkpoint", write, self._CHECKPOINT_FILES, "a harvest checkpoint")

    def _progress(self, status: str, n_tokens: int) -> None:
        with self.db.transaction():
            self.db.put_run(self.run_id, self.features.name, "harvest", status, self.run_config, n_tokens,
                            self.cfg.n_tokens)

    # -- the pass ------------------------------------------------------------------------------------
    def run(self, *, progress: bool = True, on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Harvest (or resume) and write the database; ``on_batch(i)`` is called after batch ``i`` is folded.

        Holds the state directory's writer lock: a second harvest of the same run gets ``LockedError``
        naming the first one's PID instead of interleaving checkpoints with it.
        """
        with dir_lock(self.state_dir, "feature harvest"):
            return self._run(progress, on_batch)

    @torch.inference_mode()
    def _run(self, progress: bool, on_batch: Callable[[int], None] | None) -> dict[str, Any]:
        from tqdm.auto import tqdm

        state, seq, written = self._load()
        if written:
            return self._summary(state)
        with self.db.transaction():
            self.db.put_model(self.model_name, {"n_layers": self.model.cfg.n_layers, "d_model": self.model.cfg.d_model,
                                                "d_vocab": self.model.cfg.d_vocab})
            self.db.put_dictionary(self.features.name, self.model_name, self.features.hook, self.features.kind,
                                   self.features.n_features, self.features.config)
        self._progress("running", int(state["n_tokens"]))
        bar = tqdm(total=self.n_sequences, initial=seq, unit="seq", desc=f"harvest {self.features.name}",
                   disable=not progress)
        batch = seq // self.cfg.batch_size
        while seq < self.n_sequences:
            stop = min(seq + self.cfg.batch_size, self.n_sequences)
            tokens = self.source.sequences(seq, stop)
            x = _capture(self.model, self.features.hook, tokens, self.stop)
            acts = self.features.encode(x.reshape(-1, x.shape[-1])).view(*tokens.shape, -1)
            update(state, acts, tokens, self.source.keep_mask(tokens), seq * self.seq_len, self.cfg.stats)
            bar.update(stop - seq)
            seq, batch = stop, batch + 1
            if batch % self.cfg.checkpoint_every == 0 or seq == self.n_sequences:
                self._save(state, seq, False)
                self._progress("running", int(state["n_tokens"]))
            if on_batch is not None:
                on_batch(batch)
        bar.close()
        self._write(state)
        self._save(state, seq, True)
        return self._summary(state)

    def _summary(self, state: dict[str, Tensor]) -> dict[str, Any]:
        n = max(int(state["n_tokens"]), 1)
        density = state["n_fired"].double() / n
        return {"run": self.run_id, "dictionary": self.features.name, "n_tokens": int(state["n_tokens"]),
                "n_features": self.features.n_features, "dead": int((state["n_fired"] == 0).sum()),
                "median_density": float(density.median())}

    # -- writing -------------------------------------------------------------------------------------
    def _write(self, state: dict[str, Tensor]) -> None:
        from mechscope.features import geometry
        from mechscope.features.records import example_rows, feature_rows

        f, cfg = self.features, self.cfg
        vocab = _Vocab(self.model)
        logits = logit_effects(self.model, f, cfg.n_logits) if f.in_residual else None
        cos = cosine_neighbours(f.directions, cfg.n_neighbours) if f.n_features > 1 else None
        coact = coact_neighbours(state["coact"], cfg.n_neighbours) if "coact" in state and f.n_features > 1 else None
        groups = quantile_groups(state["res_vals"], state["res_tok"] >= 0, cfg.stats.n_quantiles)
        features = feature_rows(f.name, state, cfg.stats, logits, cos, coact, vocab)
        examples = example_rows(f.name, state, groups, cfg.stats, vocab)
        fmap = (geometry.decoder_map(f.directions, n_clusters=min(geometry.N_CLUSTERS, f.n_features))
                if f.n_features >= 3 else None)  # PCA map + k-means clusters: about a second at 2,304 latents
        stats_meta = {"n_tokens": int(state["n_tokens"]), "window": [cfg.stats.left, cfg.stats.right],
                      "top_k": cfg.stats.top_k, "reservoir": cfg.stats.reservoir,
                      "n_quantiles": cfg.stats.n_quantiles, "run": self.run_id}
        with self.db.transaction():
            self.db.execute("DELETE FROM examples WHERE dictionary = ?", (f.name,))
            self.db.execute("DELETE FROM features WHERE dictionary = ?", (f.name,))
            self.db.put_dictionary(f.name, self.model_name, f.hook, f.kind, f.n_features, f.config, stats_meta)
            self.db.executemany("INSERT INTO features (dictionary, feature, density, mean_act, max_act, n_fired, "
                                "histogram, top_logits, bottom_logits, neighbours_cosine, neighbours_coact) VALUES "
                                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", features)
            self.db.executemany("INSERT INTO examples (dictionary, feature, kind, ordinal, quantile, activation, "
                                "token_index, focus, tokens, acts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", examples)
            if fmap is not None:
                geometry.store(self.db, f.name, fmap)
            self.db.put_run(self.run_id, f.name, "harvest", "done", self.run_config, int(state["n_tokens"]),
                            cfg.n_tokens)


__all__ = ["HarvestConfig", "Harvester", "logit_effects", "cosine_neighbours", "coact_neighbours"]
