"""Crash- and concurrency-safe file writing: atomic files and directories, directory locks, crash points.

**Write protocol** (every mechscope writer): write the new content under a *unique* temporary name in the
destination's directory (``tempfile``; two savers never share a temporary), fsync it, ``os.replace`` it
onto the final name, fsync the parent directory; only then delete what it supersedes. A SIGKILL at any
moment leaves either the old or the complete new content, never a torn mix.

**Directory lock**: a writer holds ``<dir>/.mechscope.lock`` with ``fcntl.flock`` for as long as it
writes (released by the kernel when the process dies, so a killed run never leaves a stale lock). The
file holds one JSON object ``{"pid", "host", "what", "since"}`` naming the holder; a second writer gets
``LockedError`` quoting it.

**Crash points** (testing aid): ``crash_point("name")`` SIGKILLs the process when the environment
variable ``MECHSCOPE_CRASH_AT`` is ``name`` (first time reached) or ``name@N`` (N-th time), so the
kill-and-resume tests stop a real writer at an exact point instead of racing a timer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mechscope.errors import LockedError, MechscopeError

CRASH_ENV = "MECHSCOPE_CRASH_AT"
LOCK_FILE = ".mechscope.lock"
_crash_counts: dict[str, int] = {}


# -- crash points ----------------------------------------------------------------------------------
def crash_point(name: str) -> None:
    """SIGKILL this process here if ``MECHSCOPE_CRASH_AT`` selects ``name`` (see the module docstring)."""
    want = os.environ.get(CRASH_ENV)
    if not want:
        return
    point, _, nth = want.partition("@")
    if point != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] == (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)


# -- atomic files ----------------------------------------------------------------------------------
def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory (makes a rename inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """fsync one file's content."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a unique temporary next to ``path``, fsync it, rename it onto ``path``."""
    final = Path(path)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        fsync_file(tmp)
        crash_point("atomic_write.before_rename")
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)
    return final


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any, indent: int | None = 1) -> Path:
    """Atomically replace ``path`` with ``data`` as JSON."""
    return atomic_write_text(path, json.dumps(data, indent=indent))


def read_json_object(path: Path, error: type[MechscopeError]) -> dict[str, Any]:
    """The JSON object in an existing file ``path``; ``error`` names a truncated/corrupted file or a non-object
    (the reader of what ``atomic_write_json`` writes; callers check that the file exists with their own hint)."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid JSON (truncated or corrupted?): {e}") from e
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


# -- atomic directories ----------------------------------------------------------------------------
def temp_dir_for(final: str | os.PathLike[str]) -> Path:
    """A new, unique, hidden directory next to ``final`` to build its content in."""
    f = Path(final)
    f.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=f.parent, prefix=f".{f.name}.", suffix=".tmp"))


def publish_dir(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Make the fully written directory ``tmp`` appear as ``final`` in one rename.

    Every file in ``tmp`` and ``tmp`` itself are fsynced first. An existing ``final`` is first renamed
    aside (a unique hidden name) and deleted only after the new directory is in place, so ``final``
    names a complete directory at every instant except between two renames, where the old one is still
    on disk under the hidden name (``recover_dir`` puts it back).
    """
    t, f = Path(tmp), Path(final)
    for p in t.rglob("*"):
        if p.is_file():
            fsync_file(p)
    fsync_dir(t)
    trash = None
    if f.exists():
        trash = Path(tempfile.mkdtemp(dir=f.parent, prefix=f".{f.name}.", suffix=".old"))
        trash.rmdir()
        os.replace(f, trash)
        crash_point("publish_dir.between_renames")
    os.replace(t, f)
    fsync_dir(f.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return f


def write_dir(final: str | os.PathLike[str], write: Callable[[Path], object], owned: set[str], what: str) -> Path:
    """Build a directory with ``write(tmp)`` and publish it as ``final`` in one rename (``publish_dir``).

    An existing ``final`` is replaced as a whole, so it may only hold files named in ``owned`` (and
    hidden files): anything else raises ``ConfigError`` instead of being deleted.
    """
    from mechscope.errors import ConfigError

    f = Path(final).absolute()
    recover_dir(f)
    if f.exists() and not f.is_dir():
        raise ConfigError(f"{f} is a file; {what} is saved as a directory; choose another path")
    if f.is_dir():
        foreign = sorted(p.name for p in f.iterdir() if p.name not in owned and not p.name.startswith("."))
        if foreign:
            raise ConfigError(f"{f} holds other files ({', '.join(foreign[:5])}); {what} replaces its whole "
                              f"directory, so save it into a new or empty directory")
    tmp = temp_dir_for(f)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    crash_point("write_dir.before_publish")
    return publish_dir(tmp, f)


def recover_dir(final: str | os.PathLike[str]) -> None:
    """Undo a publish killed between its two renames: restore the moved-aside old ``final``."""
    f = Path(final)
    if f.exists() or not f.parent.is_dir():
        return
    olds = sorted(f.parent.glob(f".{f.name}.*.old"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.replace(olds[-1], f)
        fsync_dir(f.parent)


def remove_temps(directory: str | os.PathLike[str]) -> None:
    """Delete leftover temporaries (``.*.tmp``, ``.*.old``) of killed writers in ``directory``."""
    d = Path(directory)
    if not d.is_dir():
        return
    for p in list(d.glob(".*.tmp")) + list(d.glob(".*.old")):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


# -- directory locks -------------------------------------------------------------------------------
def lock_holder(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The holder record of ``directory``'s lock file (or None if absent/unreadable)."""
    try:
        data = json.loads((Path(directory) / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class DirLock:
    """An exclusive writer lock on a directory (see the module docstring); use as a context manager."""

    def __init__(self, directory: str | os.PathLike[str], what: str) -> None:
        self.directory = Path(directory)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> DirLock:
        """Take the lock or raise ``LockedError`` naming the holder's PID."""
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            h = lock_holder(self.directory) or {}
            pid = h.get("pid", "unknown")
            who = "this process" if pid == os.getpid() else "another process"
            raise LockedError(
                f"{self.directory} is being written by {who} (PID {pid}: {h.get('what', 'a mechscope writer')} "
                f"on {h.get('host', '?')} since {h.get('since', '?')}); wait for it to finish or stop it "
                f"(the lock in {path.name} is released automatically when that process exits)") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what,
                  "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (idempotent); the file stays, emptied of its holder."""
        import fcntl

        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def dir_lock(directory: str | os.PathLike[str], what: str) -> Iterator[DirLock]:
    """``with dir_lock(run_dir, "mechscope.train"):`` hold the writer lock of ``directory``."""
    lock = DirLock(directory, what).acquire()
    try:
        yield lock
    finally:
        lock.release()


__all__ = ["CRASH_ENV", "LOCK_FILE", "DirLock", "atomic_write", "atomic_write_json", "atomic_write_text",
           "crash_point", "dir_lock", "fsync_dir", "fsync_file", "lock_holder", "publish_dir", "recover_dir",
           "write_dir",
           "remove_temps", "temp_dir_for"]
