"""Corpora: document sources, seeded per-document split, cached flat token arrays, chunks and bigram counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mechscope.data.corpus import CorpusConfig, iter_documents, load_corpus
from mechscope.errors import ConfigError, ModelFileError
from tests.typecheck import ill_typed


def _write_docs(tmp_path: Path, n: int = 40) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    for i in range(n):
        (d / f"doc{i:02d}.txt").write_text(f"document {i}: " + "the quick brown fox. " * (5 + i % 7))
    return d


def test_directory_corpus_round_trips_bytes_and_splits_by_document(tmp_path: Path) -> None:
    src = _write_docs(tmp_path)
    cfg = CorpusConfig(source=str(src), val_fraction=0.25, seed=1, cache_dir=str(tmp_path / "cache"))
    corpus = load_corpus(cfg)
    texts = [d.text for d in iter_documents(str(src))]
    assert corpus.d_vocab == 257 and corpus.train.separator == 256
    assert corpus.train.n_documents + corpus.val.n_documents == 40 and corpus.val.n_documents > 0
    # every document appears whole in exactly one split, separated by 256
    joined = {name: bytes(np.asarray(s.tokens)[np.asarray(s.tokens) != 256].astype(np.uint8)).decode()
              for name, s in (("train", corpus.train), ("val", corpus.val))}
    assert len(corpus.train) + len(corpus.val) == sum(len(t.encode()) + 1 for t in texts)
    for t in texts:
        assert (t in joined["train"]) != (t in joined["val"])
    # a different seed gives a different split; the same config reuses the cache
    other = load_corpus(CorpusConfig(source=str(src), val_fraction=0.25, seed=2, cache_dir=str(tmp_path / "cache")))
    assert other.root != corpus.root
    again = load_corpus(cfg)
    assert again.root == corpus.root and np.array_equal(again.train.tokens, corpus.train.tokens)


def test_chunks_batches_and_bigram_counts(tmp_path: Path) -> None:
    corpus = load_corpus(CorpusConfig(source=str(_write_docs(tmp_path)), val_fraction=0.0, cache_dir=str(tmp_path)))
    split, seq = corpus.train, 16
    toks = np.asarray(split.tokens).astype(np.int64)
    chunk = split.chunks([2], seq)
    assert chunk.shape == (1, seq) and chunk[0].tolist() == toks[2 * seq:3 * seq].tolist()
    b1, b2 = split.batch_at(5, 4, seq, seed=3), split.batch_at(5, 4, seq, seed=3)
    assert b1.shape == (4, seq) and (b1 == b2).all()
    # one epoch visits every chunk exactly once
    per_epoch = split.n_chunks(seq) // 4
    seen = np.concatenate([split.batch_at(s, 4, seq)[:, 0].numpy() for s in range(per_epoch)])
    assert len(seen) == per_epoch * 4
    counts = split.bigram_counts(block=7)  # odd block size: pairs across block edges still counted once
    brute = np.zeros((257, 257), dtype=np.int64)
    np.add.at(brute, (toks[:-1], toks[1:]), 1)
    assert np.array_equal(counts, brute)
    ev = split.eval_chunks(3, seq)
    assert ev.shape == (3, seq) and (ev == split.eval_chunks(3, seq)).all()


def test_jsonl_and_named_sources(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"text": "hello"}) + "\n\n" + json.dumps({"text": "world"}) + "\n")
    assert [d.text for d in iter_documents(str(p))] == ["hello", "world"]
    p.write_text('{"no_text": 1}\n')
    with pytest.raises(ModelFileError, match="text"):
        list(iter_documents(str(p)))
    first = next(iter_documents("stdlib-source"))
    assert first.id.endswith(".py") and len(first.text) > 0
    docs = iter_documents("stdlib-docs")
    assert len(next(docs).text) > 20
    with pytest.raises(ConfigError, match="stdlib-source"):
        iter_documents(str(tmp_path / "missing"))


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        CorpusConfig(val_fraction=1.0)
    with pytest.raises(ConfigError, match="tokenizer"), ill_typed():
        CorpusConfig(tokenizer="gpt2")  # type: ignore[arg-type]


def test_restrict_vocab_keeps_frequent_tokens(tmp_path: Path) -> None:
    from mechscope.data.vocab import VocabView, restrict_vocab
    from mechscope.tokens import Tokenizer

    corpus = load_corpus(CorpusConfig(source=str(_write_docs(tmp_path)), val_fraction=0.2, cache_dir=str(tmp_path)))
    small, kept = restrict_vocab(corpus, 10)
    orig, new = np.asarray(corpus.train.tokens).astype(np.int64), np.asarray(small.train.tokens).astype(np.int64)
    freq = np.bincount(orig, minlength=257)
    assert small.d_vocab == 10 and new.max() == 9 and kept[small.train.separator] == 256
    # kept tokens map back exactly; everything else is the OOV id 9
    is_kept = np.isin(orig, kept)
    assert np.array_equal(kept[new[is_kept]], orig[is_kept]) and (new[~is_kept] == 9).all()
    assert freq[kept[1:]].min() >= np.delete(freq, kept).max()  # the most frequent ones (after the separator)
    view = VocabView(Tokenizer.bytes(), kept)
    assert view.to_string([int(np.where(kept == ord("e"))[0][0]), 9]) == "e<oov>"


def test_directory_split_does_not_depend_on_where_the_directory_lives(tmp_path: Path) -> None:
    """Document ids are relative to the corpus directory, so a moved copy splits the same way."""
    import shutil

    src = _write_docs(tmp_path)
    moved = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(src, moved)
    a = load_corpus(CorpusConfig(source=str(src), seed=3, cache_dir=str(tmp_path / "c1")))
    b = load_corpus(CorpusConfig(source=str(moved), seed=3, cache_dir=str(tmp_path / "c2")))
    assert [d.id for d in iter_documents(str(src))] == [d.id for d in iter_documents(str(moved))]
    assert next(iter(iter_documents(str(src)))).id == "doc00.txt"
    assert np.array_equal(np.asarray(a.val.tokens), np.asarray(b.val.tokens))
    assert np.array_equal(np.asarray(a.train.tokens), np.asarray(b.train.tokens))
