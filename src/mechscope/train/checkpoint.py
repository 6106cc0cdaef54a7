"""Atomic, resumable, pickle-free checkpoints.

A checkpoint is a directory ``<run>/checkpoints/step_XXXXXXXX/`` holding

- ``model.safetensors``: the weights (``model.state_dict()``);
- ``state.safetensors``: optimiser tensors (``optim.<param index>.<name>``), the torch CPU generator state
  (``rng.torch``, uint8), numpy's MT19937 key (``rng.numpy``) and the batch source's tensors (``data.*``);
  absent in old checkpoints pruned to weights only;
- ``state.json``: the manifest: format version, experiment name, step, train and run configs, optimiser
  param groups and scalar state, python ``random`` and numpy scalar state, the batch source's counters,
  cumulative wall time, and the SHA-256 of each safetensors file (so a flipped byte is caught).

Writing is atomic: files go to a uniquely named hidden temporary directory, each is fsynced, the
directory is renamed into place with ``os.replace`` and the parent fsynced; then ``checkpoints/latest``
(a one-line pointer) is replaced the same way. A SIGKILL at any moment leaves either the previous or the
new checkpoint; a run killed before its first pointer resumes from its newest complete checkpoint.
Nothing here unpickles: ``torch.load`` is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mechscope import io_safety
from mechscope.errors import ConfigError, ModelFileError
from mechscope.io_safety import crash_point, publish_dir, recover_dir, remove_temps, temp_dir_for

FORMAT_VERSION = 1
CKPT_DIR = "checkpoints"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read from disk: the manifest, the weights, and (if kept) the resumable state."""

    path: Path
    """The checkpoint directory."""
    step: int
    """Number of updates done when it was written."""
    manifest: dict[str, Any]
    """The parsed ``state.json``."""
    weights: dict[str, Tensor]
    """``model.state_dict()`` as saved."""
    state: dict[str, Tensor] | None
    """Contents of ``state.safetensors``; None when pruned to weights only."""


def step_dir(run_dir: Path, step: int) -> Path:
    """``<run>/checkpoints/step_XXXXXXXX``."""
    return Path(run_dir) / CKPT_DIR / f"step_{step:08d}"


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, directory) of every complete checkpoint, oldest first."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    out = []
    for d in root.glob("step_*"):
        if d.is_dir() and d.name[5:].isdigit() and (d / "state.json").is_file():
            out.append((int(d.name[5:]), d))
    return sorted(out)


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The directory ``checkpoints/latest`` points to, or None for a run without checkpoints.

    Without a pointer (a run killed between publishing its first checkpoint and writing the pointer)
    the newest complete checkpoint is returned.
    """
    pointer = Path(run_dir) / CKPT_DIR / "latest"
    if not pointer.is_file():
        done = list_checkpoints(run_dir)
        return done[-1][1] if done else None
    name = pointer.read_text(encoding="utf-8", errors="replace").strip()
    d = pointer.parent / name
    if name.startswith("step_") and not d.is_dir():
        recover_dir(d)  # a republish killed between its two renames
    if not name.startswith("step_") or not d.is_dir():
        raise ModelFileError(f"{pointer} names {name!r}, which is not a checkpoint directory; "
                             f"fix or delete the pointer (checkpoints present: "
                             f"{[p.name for _, p in list_checkpoints(run_dir)]})")
    return d


# -- writing ----------------------------------------------------------------------------------------
def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a unique temporary, fsync it and ``os.replace`` it onto ``path``."""
    io_safety.atomic_write(path, write)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def write_checkpoint(run_dir: Path, step: int, weights: dict[str, Tensor], state: dict[str, Tensor],
                     manifest: dict[str, Any]) -> Path:
    """Write one checkpoint atomically and point ``latest`` at it; returns its directory."""
    final = step_dir(run_dir, step)
    tmp = temp_dir_for(final)
    files = {"model.safetensors": weights, "state.safetensors": state}
    hashes = {}
    for name, tensors in files.items():
        _save_tensors(tensors, tmp / name)
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
        hashes[name] = _sha256(tmp / name)
    manifest = {**manifest, "format_version": FORMAT_VERSION, "step": step, "sha256": hashes}
    (tmp / "state.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    with open(tmp / "state.json", "rb") as f:
        os.fsync(f.fileno())
    crash_point("train_checkpoint.before_publish")
    # published earlier but never pointed at (killed before `latest` moved)? publish_dir replaces it
    publish_dir(tmp, final)
    crash_point("train_checkpoint.before_pointer")
    atomic_write(final.parent / "latest", lambda p: p.write_text(final.name + "\n", encoding="utf-8"))
    remove_temps(final.parent)
    return final


def prune_states(run_dir: Path, keep: int | None) -> None:
    """Delete ``state.safetensors`` from all but the newest ``keep`` checkpoints (weights stay)."""
    if keep is None:
        return
    for _, d in list_checkpoints(run_dir)[:-keep]:
        f = d / "state.safetensors"
        if f.exists():
            manifest = json.loads((d / "state.json").read_text(encoding="utf-8"))
            manifest["sha256"].pop("state.safetensors", None)
            manifest["pruned"] = True
            atomic_write(d / "state.json", partial(Path.write_text, data=json.dumps(manifest, indent=1)))
            f.unlink()


# -- reading ----------------------------------------------------------------------------------------
def read_manifest(ckpt_dir: Path) -> dict[str, Any]:
    """Parse ``state.json`` of a checkpoint, raising ``ModelFileError`` if it is missing or malformed."""
    path = Path(ckpt_dir) / "state.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path} is missing: {ckpt_dir} is not a mechscope checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path} is corrupted (not valid JSON: {e}); delete {ckpt_dir} to fall back "
                             "to an earlier checkpoint") from e
    if not isinstance(manifest, dict) or "step" not in manifest or "sha256" not in manifest:
        raise ModelFileError(f"{path} is not a mechscope checkpoint manifest (no step/sha256 fields)")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(f"{path} has format_version {manifest['format_version']}, newer than this "
                             f"mechscope understands ({FORMAT_VERSION}); upgrade mechscope")
    return manifest


def _load_tensors(path: Path, expected_sha: str | None) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelFileError(f"{path} is missing from the checkpoint; delete {path.parent} to fall back "
                             "to an earlier checkpoint")
    if expected_sha is not None and _sha256(path) != expected_sha:
        raise ModelFileError(f"{path} is corrupted (its SHA-256 does not match the manifest); delete "
                             f"{path.parent} to fall back to an earlier checkpoint")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path} is not a readable safetensors file ({e})") from e


def read_checkpoint(ckpt_dir: str | os.PathLike[str], *, experiment: str | None = None,
                    with_state: bool = True) -> Checkpoint:
    """Read and verify a checkpoint directory.

    Raises ``ModelFileError`` for missing/corrupted files (hash mismatch, bad JSON, bad safetensors) and
    ``ConfigError`` when ``experiment`` is given and the checkpoint belongs to another experiment.
    """
    d = Path(ckpt_dir)
    manifest = read_manifest(d)
    if experiment is not None and manifest.get("experiment") != experiment:
        raise ConfigError(f"{d} is a checkpoint of experiment {manifest.get('experiment')!r}, not "
                          f"{experiment!r}; point at a run directory made by {experiment!r}")
    shas = manifest["sha256"]
    weights = _load_tensors(d / "model.safetensors", shas.get("model.safetensors"))
    state = None
    if with_state and "state.safetensors" in shas:
        state = _load_tensors(d / "state.safetensors", shas["state.safetensors"])
    return Checkpoint(path=d, step=int(manifest["step"]), manifest=manifest, weights=weights, state=state)


# -- optimiser and RNG state, without pickle --------------------------------------------------------
def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Split ``opt.state_dict()`` into JSON (param groups, scalars) and tensors (``optim.<i>.<name>``)."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"optim.{idx}.{name}"] = v
            else:
                scalars.setdefault(str(idx), {})[name] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return {"param_groups": groups, "scalars": scalars}, tensors


def optimizer_from_tensors(opt: torch.optim.Optimizer, meta: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Inverse of ``optimizer_to_tensors``: load into ``opt`` (built with the same parameters)."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, sc in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(sc)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as e:
        raise ModelFileError(f"the checkpoint's optimiser state does not fit this model's parameters: {e}") from e


def rng_state() -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Global RNG states: torch CPU, python ``random``, numpy (JSON part, tensor part)."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    meta = {"python": [version, list(internal), gauss],
            "numpy": [np_name, int(np_pos), int(np_has_gauss), float(np_gauss)]}
    tensors = {"rng.torch": torch.get_rng_state(),
               "rng.numpy": torch.from_numpy(np.asarray(np_keys, dtype=np.int64))}
    return meta, tensors


def set_rng_state(meta: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Inverse of ``rng_state``."""
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, pos, has_gauss, cached = meta["numpy"]
    keys = tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
