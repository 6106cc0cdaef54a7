"""Crash-safe files of a dictionary training run: checkpoints, the ``latest.json`` pointer, ``metrics.jsonl``.

Layout of ``out_dir``: ``checkpoints/step-NNNNNNN/`` (dictionary files, ``optimizer.safetensors``,
``trainer_state.json``), ``checkpoints/latest.json`` (``{"checkpoint": name, "step": n}``), ``metrics.jsonl``
and, at the end, ``dictionary/``.

Order of a checkpoint write (``write_checkpoint``): every file into a unique hidden directory, fsync,
publish it under ``step-N`` by rename (an existing ``step-N`` is renamed aside first and deleted only
afterwards), replace ``latest.json`` atomically, and only then prune older checkpoints. A kill at any
point leaves ``latest.json`` naming a complete checkpoint (or, before the first pointer, none).
``find_latest`` also copes with a missing or dangling pointer by taking the newest complete checkpoint.

``metrics.jsonl`` holds each logged step exactly once: on resume from step ``s`` the rows of steps
``> s`` (measured after that checkpoint, about to be measured again) and any torn last line are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from mechscope.io_safety import (
    atomic_write_json,
    atomic_write_text,
    crash_point,
    publish_dir,
    recover_dir,
    remove_temps,
    temp_dir_for,
)

CKPT_ROOT, LATEST, STATE, OPTIM, METRICS = "checkpoints", "latest.json", "trainer_state.json", \
    "optimizer.safetensors", "metrics.jsonl"


def step_name(step: int) -> str:
    """``step-NNNNNNN``."""
    return f"step-{step:07d}"


def complete_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoint directories (all three kinds of file present), oldest first."""
    root = Path(out_dir) / CKPT_ROOT
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit()
                  and (p / STATE).is_file() and (p / OPTIM).is_file() and (p / "config.json").is_file())


def find_latest(out_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``latest.json``'s target, else the newest complete one, else None."""
    root = Path(out_dir) / CKPT_ROOT
    if not root.is_dir():
        return None
    pointer = root / LATEST
    name = None
    if pointer.is_file():
        try:
            name = json.loads(pointer.read_text(encoding="utf-8")).get("checkpoint")
        except (ValueError, AttributeError, OSError):
            name = None
    if isinstance(name, str) and name.startswith("step-"):
        recover_dir(root / name)  # a republish killed between its two renames
        if (root / name / STATE).is_file():
            return root / name
    done = complete_checkpoints(Path(out_dir))
    return done[-1] if done else None


def latest_step(out_dir: Path) -> int | None:
    """Step of the checkpoint ``find_latest`` would return."""
    p = find_latest(out_dir)
    return int(p.name[5:]) if p is not None else None


def write_checkpoint(out_dir: Path, step: int, write_dictionary: Callable[[Path], object],
                     optimizer_tensors: dict[str, Tensor], state: dict[str, Any], keep: int) -> Path:
    """Write checkpoint ``step`` (see the module docstring for the order); returns its directory."""
    from mechscope.dictionaries.io import atomic_save_tensors

    root = Path(out_dir) / CKPT_ROOT
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    tmp = temp_dir_for(final)
    write_dictionary(tmp)
    atomic_save_tensors(tmp / OPTIM, optimizer_tensors)
    atomic_write_json(tmp / STATE, state)
    crash_point("dict_checkpoint.before_publish")
    publish_dir(tmp, final)
    crash_point("dict_checkpoint.before_pointer")
    atomic_write_json(root / LATEST, {"checkpoint": final.name, "step": step})
    crash_point("dict_checkpoint.before_prune")
    prune(out_dir, keep, protect=final.name)
    return final


def prune(out_dir: Path, keep: int, protect: str) -> None:
    """Delete all but the newest ``keep`` checkpoints (never ``protect``) and leftover temporaries."""
    import shutil

    root = Path(out_dir) / CKPT_ROOT
    old = sorted(p for p in root.glob("step-*") if p.name != protect)
    for p in old[: max(len(old) - (keep - 1), 0)]:
        shutil.rmtree(p, ignore_errors=True)
    remove_temps(root)


# -- metrics ---------------------------------------------------------------------------------------
def append_metrics(out_dir: Path, row: dict[str, Any]) -> None:
    """Append one row to ``metrics.jsonl`` (flushed; a kill can tear at most this line)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(out_dir) / METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def truncate_metrics(out_dir: Path, step: int) -> None:
    """Keep only whole rows with ``row["step"] <= step`` (rewritten atomically): prepares a resume."""
    path = Path(out_dir) / METRICS
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)) and row["step"] <= step:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))


def publish_final(out_dir: Path, write_dictionary: Callable[[Path], object]) -> Path:
    """Write ``out_dir/dictionary`` as one atomically published directory."""
    final = Path(out_dir) / "dictionary"
    tmp = temp_dir_for(final)
    write_dictionary(tmp)
    crash_point("dict_final.before_publish")
    return publish_dir(tmp, final)


__all__ = ["append_metrics", "complete_checkpoints", "find_latest", "latest_step", "prune", "publish_final",
           "step_name", "truncate_metrics", "write_checkpoint"]
