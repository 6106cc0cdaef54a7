"""Activation datasets for probing: ``(model, hooks, tokens, positions) -> {hook: [n d]} + labels``.

One forward pass per batch serves every requested hook (all layers of a hook kind come out of the same
pass, so a probing sweep over 30 layers costs one pass over the data, not 30), stopped after the last block
any hook needs. Each row carries its label, the id of the *source document* it came from (``groups``) and
optionally a word *type* (for Hewitt & Liang control tasks). Splits are by group: a seeded hash of the
group id decides train / validation / test, so two rows of one document never land on different sides.

Datasets are cached on disk as an ``ActivationStore`` (``activations/store.py``: safetensors shards +
manifest), with labels, groups and types stored as three extra one-number "hooks".
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Bool, Float, Int, Shaped
from torch import Tensor

from mechscope.errors import ConfigError, ShapeError

_EXTRA = ("__label__", "__group__", "__type__")


@dataclass(frozen=True)
class ActivationDataset:
    """Aligned rows: row ``i`` of every hook, ``labels[i]``, ``groups[i]`` and ``types[i]`` describe one token."""

    acts: dict[str, Float[Tensor, "n d"]]
    """Hook name -> activations [n d] (trailing axes flattened, e.g. heads x d_head)."""
    labels: Shaped[Tensor, " n"]
    """Int class labels (classification) or float targets (regression)."""
    groups: Int[Tensor, " n"]
    """Source-document id of each row; splits never separate rows of one group."""
    types: Int[Tensor, " n"] | None = None
    """Word-type id of each row (e.g. the token id), used by control tasks; None when unknown."""

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        bad = {h: tuple(a.shape) for h, a in self.acts.items() if a.dim() != 2 or a.shape[0] != n}
        if self.groups.shape[0] != n or (self.types is not None and self.types.shape[0] != n) or bad:
            raise ShapeError(f"ActivationDataset: labels has {n} rows; groups {tuple(self.groups.shape)}, types "
                             f"{None if self.types is None else tuple(self.types.shape)} and every activation "
                             f"[n d] must have {n} rows too (got {bad or 'ok'})")
        if not self.acts:
            raise ConfigError("ActivationDataset needs at least one hook")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def hooks(self) -> list[str]:
        return list(self.acts)

    def subset(self, idx: Int[Tensor, " m"]) -> ActivationDataset:
        """The rows ``idx`` (a split)."""
        return ActivationDataset({h: a[idx] for h, a in self.acts.items()}, self.labels[idx], self.groups[idx],
                                 None if self.types is None else self.types[idx])

    def stacked(self, hooks: Sequence[str] | None = None) -> Float[Tensor, "n_hooks n d"]:
        """Activations of ``hooks`` (default: all) as one tensor, for a batched sweep (equal widths needed)."""
        names = list(hooks) if hooks is not None else self.hooks
        unknown = [h for h in names if h not in self.acts]
        if unknown:
            raise ConfigError(f"hooks {unknown} are not in this dataset; it has {self.hooks}")
        widths = {self.acts[h].shape[1] for h in names}
        if len(widths) != 1:
            raise ShapeError(f"a batched sweep needs hooks of one width, got { {h: self.acts[h].shape[1] for h in names} }")
        return torch.stack([self.acts[h] for h in names])

    # -- disk cache ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None) -> Path:
        """Write the dataset as an ``ActivationStore`` at ``path`` (a new directory)."""
        from mechscope.activations.store import ActivationStore

        if self.labels.is_floating_point() is False and self.labels.abs().max() > 2**24:
            raise ConfigError("labels above 2**24 cannot be stored exactly; relabel the classes 0..C-1")
        types = self.types if self.types is not None else torch.full_like(self.groups, -1)
        shapes: dict[str, tuple[int, ...]] = {h: (a.shape[1],) for h, a in self.acts.items()}
        shapes |= {k: () for k in _EXTRA}
        meta = {"labels": "float" if self.labels.is_floating_point() else "int",
                "has_types": self.types is not None, **(metadata or {})}
        store = ActivationStore.create(path, shapes, shard_rows=max(len(self), 1), metadata=meta)
        store.append({**self.acts, "__label__": self.labels.float(), "__group__": self.groups.float(),
                      "__type__": types.float()})
        store.finish()
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ActivationDataset:
        """Read a dataset written by :meth:`save` (refusing a store that is not one)."""
        from mechscope.activations.store import ActivationStore

        store = ActivationStore.open(path)
        if not store.complete or any(k not in store.hooks for k in _EXTRA):
            raise ConfigError(f"{path} is not a complete probing dataset (written by ActivationDataset.save)")
        parts = [store.read_shard(i) for i in range(len(store.manifest["shards"]))]
        cat = {h: torch.cat([p[h] for p in parts]) for h in store.hooks}
        meta = store.manifest["metadata"]
        labels = cat["__label__"] if meta["labels"] == "float" else cat["__label__"].round().long()
        return cls({h: t for h, t in cat.items() if h not in _EXTRA}, labels, cat["__group__"].round().long(),
                   cat["__type__"].round().long() if meta["has_types"] else None)


def collect(model: Any, hooks: Sequence[str], tokens: Int[Tensor, "n_seq pos"],
            positions: Int[Tensor, " n_seq"] | Bool[Tensor, "n_seq pos"], labels: Shaped[Tensor, " n"], *,
            groups: Int[Tensor, " n"] | None = None, attention_mask: Int[Tensor, "n_seq pos"] | None = None,
            batch_size: int = 32, types_from_tokens: bool = True) -> ActivationDataset:
    """Activations of ``hooks`` at the chosen positions of ``tokens``, with one label per chosen position.

    Args:
        positions: one position per sequence (``[n_seq]``, negative counts from the end) or a bool mask
            ``[n_seq pos]`` choosing any number of positions per sequence (rows in row-major order).
        labels: one label per chosen position.
        groups: source-document id per row (default: the sequence index, i.e. each sequence its own document).
        types_from_tokens: record the token id at each row as its word type (for control tasks).
    """
    from mechscope.activations.source import stop_layer

    names = model.hook_names(list(hooks))
    n_seq, n_pos = tokens.shape
    if positions.dtype == torch.bool:
        if positions.shape != tokens.shape:
            raise ShapeError(f"a position mask must have the tokens' shape {tuple(tokens.shape)}, got {tuple(positions.shape)}")
        mask = positions
    else:
        if positions.shape[0] != n_seq or int(positions.max()) >= n_pos or int(positions.min()) < -n_pos:
            raise ConfigError(f"positions must give one index in [-{n_pos}, {n_pos}) per sequence ({n_seq}), "
                              f"got {positions.tolist()[:10]}")
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        mask[torch.arange(n_seq), positions % n_pos] = True
    n_rows = int(mask.sum())
    if labels.shape[0] != n_rows:
        raise ShapeError(f"labels has {labels.shape[0]} entries but the positions choose {n_rows} rows; "
                         f"give exactly one label per chosen position")
    seq_of_row = torch.arange(n_seq)[:, None].expand(n_seq, n_pos)[mask]
    groups = seq_of_row.clone() if groups is None else groups
    if groups.shape[0] != n_rows:
        raise ShapeError(f"groups has {groups.shape[0]} entries, need one per row ({n_rows})")
    stop = stop_layer(names, model.cfg.n_layers)
    out: dict[str, list[Tensor]] = {h: [] for h in names}
    with torch.inference_mode():
        for lo in range(0, n_seq, batch_size):
            got: dict[str, Tensor] = {}

            def save(x: Tensor, hook: Any, got: dict[str, Tensor] = got) -> None:
                got[hook.name] = x

            kwargs: dict[str, Any] = {"stop_at_layer": stop} if stop is not None else {}
            if attention_mask is not None:
                kwargs["attention_mask"] = attention_mask[lo:lo + batch_size]
            with model.hooks(fwd=[(h, save) for h in names]):
                model(tokens[lo:lo + batch_size], **kwargs)
            m = mask[lo:lo + batch_size]
            for h in names:
                out[h].append(got[h][m].flatten(1).float())
    acts = {h: torch.cat(v) for h, v in out.items()}
    return ActivationDataset(acts, labels, groups.long(), tokens[mask].long() if types_from_tokens else None)


class Splits(NamedTuple):
    """Row indices of the three splits (disjoint in groups)."""

    train: Int[Tensor, " n_train"]
    val: Int[Tensor, " n_val"]
    test: Int[Tensor, " n_test"]


def split_by_group(groups: Int[Tensor, " n"], fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
                   seed: int = 0) -> Splits:
    """Train / validation / test rows, decided per group by a seeded hash (so no group straddles two splits)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    uniq = torch.unique(groups)
    if len(uniq) < 3:
        raise ConfigError(f"splitting by source document needs at least 3 distinct groups, got {len(uniq)}")
    u = torch.tensor([int.from_bytes(hashlib.sha256(f"{seed}:{int(g)}".encode()).digest()[:8], "little") / 2.0**64
                      for g in uniq.tolist()])
    which = (u >= fractions[0]).long() + (u >= fractions[0] + fractions[1]).long()
    # never leave a split empty: give it the groups hashed closest to it
    for k in range(3):
        if not (which == k).any():
            which[torch.argsort((u - sum(fractions[:k]) - fractions[k] / 2).abs())[0]] = k
    row_split = which[torch.searchsorted(uniq, groups)]
    return Splits(*(torch.nonzero(row_split == k).squeeze(1) for k in range(3)))


__all__ = ["ActivationDataset", "Splits", "collect", "split_by_group"]
