"""``ActivationSource``: a model + token sequences + hook names -> a stream of activation rows.

One forward pass serves every requested hook (rows stay aligned: row ``i`` of every hook is the same
token), and the forward stops right after the last block that any requested hook lives in
(``stop_at_layer``), so harvesting a middle layer costs about half a forward. Everything runs under
``torch.inference_mode()``.

Sequences come from a ``TokenSplit`` of ``mechscope.data.corpus`` (sequence ``i`` is chunk ``perm[i]``
of ``seq_len`` tokens, with the tokenizer's BOS prepended when asked, so harvested rows are already
shuffled across documents) or from a ready ``[n_seq pos]`` token tensor. Not every position becomes a
row: position 0 is dropped by default (the first position is an attention sink whose residual norm is
an outlier, BOS or not, and dictionaries trained on it waste latents), and so are positions holding any
of ``exclude_token_ids`` (padding, separators).

:meth:`ActivationSource.harvest` writes rows into an ``ActivationStore``. It is resumable without any
bookkeeping of its own: which rows a sequence yields depends only on its tokens, so after a crash the
harvester counts kept positions over the token sequences (no forward pass) to find the sequence and
offset of the first row not on disk, and continues from there; the store ends up exactly as an
uninterrupted harvest would have written it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mechscope.activations.store import _DTYPES as _STORE_DTYPES
from mechscope.activations.store import ActivationStore
from mechscope.errors import ConfigError, ShapeError
from mechscope.io_safety import crash_point, dir_lock


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """How token sequences are formed and which positions become activation rows."""

    seq_len: int = 128
    """Tokens per sequence, including a prepended BOS (corpus sources; a tensor source keeps its width)."""
    batch_size: int = 16
    """Sequences per forward pass."""
    prepend_bos: bool | None = None
    """Prepend the tokenizer's BOS to every corpus chunk; None follows the tokenizer's own convention."""
    exclude_first: bool = True
    """Drop position 0 of every sequence (the attention sink: an outlier norm, BOS or not)."""
    exclude_token_ids: tuple[int, ...] = ()
    """Also drop positions holding these token ids (padding, document separators)."""
    shuffle: bool = True
    """Take corpus chunks in a seeded random order (rows arrive mixed across documents)."""
    seed: int = 0
    """Seed of the chunk order."""

    def __post_init__(self) -> None:
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise ConfigError(f"SourceConfig.seq_len must be an int >= 2, got {self.seq_len!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"SourceConfig.batch_size must be a positive int, got {self.batch_size!r}")
        if any(not isinstance(t, int) or t < 0 for t in self.exclude_token_ids):
            raise ConfigError(f"SourceConfig.exclude_token_ids must be non-negative ints, got {self.exclude_token_ids}")


def stop_layer(hooks: Sequence[str], n_layers: int) -> int | None:
    """The ``stop_at_layer`` that still runs every hook in ``hooks`` (None: a full forward is needed).

    ``blocks.L.*`` needs blocks 0..L (stop at L+1); embedding hooks need none (stop at 0); anything else
    (``ln_final.*``) needs the whole model.
    """
    need = 0
    for h in hooks:
        parts = h.split(".")
        if parts[0] == "blocks" and len(parts) > 2 and parts[1].isdigit():
            need = max(need, int(parts[1]) + 1)
        elif h not in ("hook_tokens", "hook_embed", "hook_pos_embed"):
            return None
    return need if need < n_layers else None


class ActivationSource:
    """Stream activations of ``hooks`` of ``model`` over token sequences; see the module docstring.

    Args:
        model: a ``HookedTransformer`` (or any ``HookedModule`` taking ``tokens`` and ``stop_at_layer``).
        hooks: full hook names; all are captured in the same forward pass.
        tokens: a ``TokenSplit`` (corpus split) or an int tensor ``[n_seq pos]`` used as is.
        cfg: sequence and position settings.

    Example:
        >>> src = ActivationSource(model, ["blocks.1.hook_resid_post"], tokens)  # doctest: +SKIP
        >>> for rows in src.batches():  # {hook: [n_rows d_model]} per forward pass
        ...     ...
    """

    def __init__(self, model: Any, hooks: Sequence[str], tokens: Any, cfg: SourceConfig | None = None) -> None:
        self.model = model
        self.cfg = cfg or SourceConfig()
        if isinstance(hooks, str):
            hooks = [hooks]
        if not hooks:
            raise ConfigError("ActivationSource needs at least one hook name")
        self.hooks = model.hook_names(list(hooks))  # HookNameError with close matches if unknown
        self.stop_at_layer = stop_layer(self.hooks, model.cfg.n_layers)
        self._split: Any = None
        if isinstance(tokens, Tensor):
            if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
                raise ShapeError(f"token source must be an int tensor [n_seq pos], got {tuple(tokens.shape)} "
                                 f"{tokens.dtype}")
            self._tokens: Tensor | None = tokens.long()
            self.n_sequences = tokens.shape[0]
        else:
            self._tokens = None
            self._split = tokens
            self._bos = self._bos_id()
            width = self.cfg.seq_len - (self._bos is not None)
            self.n_sequences = tokens.n_chunks(width)
            gen = np.random.default_rng(self.cfg.seed)
            self._order = gen.permutation(self.n_sequences) if self.cfg.shuffle else np.arange(self.n_sequences)

    def _bos_id(self) -> int | None:
        tok = getattr(self.model, "tokenizer", None)
        want = self.cfg.prepend_bos if self.cfg.prepend_bos is not None else bool(tok is not None and tok.add_bos)
        if not want:
            return None
        if tok is None or tok.bos_token_id is None:
            raise ConfigError("prepend_bos=True needs a model tokenizer with a BOS token; set prepend_bos=False")
        return int(tok.bos_token_id)

    # -- sequences and positions -----------------------------------------------------------------------
    def sequences(self, start: int, stop: int) -> Tensor:
        """Token sequences ``start..stop-1`` as ``[n pos]`` (BOS prepended for corpus sources if configured)."""
        stop = min(stop, self.n_sequences)
        if self._tokens is not None:
            return self._tokens[start:stop]
        width = self.cfg.seq_len - (self._bos is not None)
        seqs = self._split.chunks(self._order[start:stop], width)
        if self._bos is not None:
            seqs = torch.cat([torch.full((seqs.shape[0], 1), self._bos, dtype=seqs.dtype), seqs], dim=1)
        return seqs

    def keep_mask(self, tokens: Tensor) -> Tensor:
        """Bool ``[n pos]``: which positions become rows (see ``exclude_first``, ``exclude_token_ids``)."""
        keep = torch.ones_like(tokens, dtype=torch.bool)
        if self.cfg.exclude_first:
            keep[:, 0] = False
        if self.cfg.exclude_token_ids:
            keep &= ~torch.isin(tokens, torch.tensor(self.cfg.exclude_token_ids, dtype=tokens.dtype))
        return keep

    def locate_row(self, row: int) -> tuple[int, int]:
        """``(sequence, offset)``: row ``row`` is the ``offset``-th kept row of that sequence (no forward)."""
        seen, step = 0, 4096
        for start in range(0, self.n_sequences, step):
            counts = self.keep_mask(self.sequences(start, start + step)).sum(1)
            cum = counts.cumsum(0) + seen
            hit = int(torch.searchsorted(cum, torch.tensor(row), right=True))
            if hit < counts.shape[0]:
                before = int(cum[hit - 1]) if hit > 0 else seen
                return start + hit, row - before
            seen = int(cum[-1])
        raise ConfigError(f"the token source yields only {seen} rows; row {row} does not exist")

    # -- activations -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def activations(self, tokens: Tensor) -> dict[str, Tensor]:
        """Rows ``{hook: [n_kept *shape]}`` of one batch of sequences ``[n pos]`` (one forward pass)."""
        got: dict[str, Tensor] = {}

        def save(x: Tensor, hook: Any) -> None:
            got[hook.name] = x

        with self.model.hooks(fwd=[(h, save) for h in self.hooks]):
            self.model(tokens, stop_at_layer=self.stop_at_layer)
        keep = self.keep_mask(tokens)
        return {h: got[h][keep] for h in self.hooks}

    def batches(self, start_sequence: int = 0) -> Iterator[dict[str, Tensor]]:
        """Rows of ``batch_size`` sequences at a time, from ``start_sequence`` to the end of the source."""
        for s in range(start_sequence, self.n_sequences, self.cfg.batch_size):
            yield self.activations(self.sequences(s, s + self.cfg.batch_size))

    def __iter__(self) -> Iterator[Tensor | tuple[Tensor, ...]]:
        """Row blocks as the trainer wants them: a tensor for one hook, a tuple in ``hooks`` order for several."""
        for rows in self.batches():
            out = tuple(rows[h] for h in self.hooks)
            yield out[0] if len(out) == 1 else out

    def row_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-row shape of every hook (one 2-token forward)."""
        probe = self.sequences(0, 1)[:, :2]
        with torch.inference_mode():
            got: dict[str, tuple[int, ...]] = {}

            def save(x: Tensor, hook: Any) -> None:
                got[hook.name] = tuple(x.shape[2:])

            with self.model.hooks(fwd=[(h, save) for h in self.hooks]):
                self.model(probe, stop_at_layer=self.stop_at_layer)
        return {h: got[h] for h in self.hooks}

    def _check_memory(self, shapes: dict[str, Any], dtype: str, shard: int) -> None:
        """Refuse a harvest whose buffered shard (plus one forward's rows) exceeds the memory budget."""
        import math

        from mechscope.cache.budget import budget_bytes, check_bytes, fmt_bytes

        itemsize = torch.empty((), dtype=_STORE_DTYPES.get(dtype, torch.float32)).element_size()
        per_row = sum(math.prod(shape) for shape in shapes.values()) * itemsize
        width = self._tokens.shape[1] if self._tokens is not None else self.cfg.seq_len
        batch_rows = self.cfg.batch_size * width
        need = 2 * (shard + batch_rows) * per_row + batch_rows * per_row * 4 // itemsize  # pending+cat, forward rows
        budget = budget_bytes()[0]
        fit = max(0, (budget - batch_rows * per_row * 4 // itemsize) // (2 * per_row) - batch_rows) if budget else 0
        check_bytes(need, f"harvesting {len(self.hooks)} hooks ({fmt_bytes(per_row)} per row) in shards of {shard} rows",
                    f"shard_rows <= {fit} fits (or fewer hooks, or dtype='bfloat16').")

    def describe(self) -> dict[str, Any]:
        """What determines the rows (stored in the manifest and checked on resume)."""
        return {"hooks": self.hooks, "source": asdict(self.cfg) | {"exclude_token_ids": list(self.cfg.exclude_token_ids)},
                "n_sequences": self.n_sequences, "tokens": "tensor" if self._tokens is not None else "corpus"}

    # -- harvesting ------------------------------------------------------------------------------------
    def harvest(self, path: str | os.PathLike[str], n_tokens: int, *, shard_rows: int = 65536,
                dtype: str = "float32", metadata: dict[str, Any] | None = None,
                progress: bool = True) -> ActivationStore:
        """Write ``n_tokens`` rows per hook into the store at ``path`` (created, or resumed if present).

        A store written by a different source description (hooks, sequence settings) is refused with
        ``ConfigError``, so a resume never mixes two harvests. The store directory is locked while it is
        written (a second harvester gets ``LockedError`` naming this one's PID).
        """
        if n_tokens <= 0:
            raise ConfigError(f"n_tokens must be positive, got {n_tokens}")
        with dir_lock(path, "activation harvest"):
            return self._harvest(Path(path), n_tokens, shard_rows, dtype, metadata, progress)

    def _harvest(self, root: Path, n_tokens: int, shard_rows: int, dtype: str, metadata: dict[str, Any] | None,
                 progress: bool) -> ActivationStore:
        from tqdm.auto import tqdm

        desc = self.describe() | {"metadata": dict(metadata or {})}
        if (root / "manifest.json").exists():
            store = ActivationStore.open(root)
            if store.manifest["metadata"].get("source") != desc:
                raise ConfigError(f"{root} holds a harvest of a different source ({store.manifest['metadata'].get('source')}); "
                                  f"use another --out directory or delete it")
        else:
            shapes = self.row_shapes()
            self._check_memory(shapes, dtype, shard_rows)  # before anything is written
            store = ActivationStore.create(root, shapes, dtype=dtype, shard_rows=shard_rows,
                                           metadata={"source": desc})
        self._check_memory(store.manifest["hooks"], store.manifest["dtype"], int(store.manifest["shard_rows"]))
        done = store.n_rows
        if done >= n_tokens:
            if not store.complete:  # killed after the last shard, before finish()
                store.finish()
            return store
        seq, offset = self.locate_row(done)
        bar = tqdm(total=n_tokens, initial=done, unit="tok", desc="harvest", disable=not progress)
        for rows in self.batches(seq):
            rows = {h: t[offset:] for h, t in rows.items()}
            offset = 0
            take = min(n_tokens - done, next(iter(rows.values())).shape[0])
            store.append({h: t[:take] for h, t in rows.items()})
            done += take
            bar.update(take)
            if done >= n_tokens:
                break
        bar.close()
        crash_point("harvest.before_finish")
        if done < n_tokens:
            store.flush()
            raise ConfigError(f"the token source ran out after {done} of {n_tokens} rows; use a bigger corpus "
                              f"or fewer tokens (the {done} rows are kept; the store is not marked complete)")
        store.finish()
        return store


__all__ = ["ActivationSource", "SourceConfig", "stop_layer"]
