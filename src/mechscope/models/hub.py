"""Hugging Face model names (``"gpt2"``, ``"EleutherAI/pythia-70m"``) resolved through ``huggingface_hub``.

``mechscope.load(name)`` looks a name that is neither a path nor a registered model up in the local
Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``), the
layout ``models--<org>--<name>/{refs/main, snapshots/<commit>/...}`` that ``transformers`` and
``huggingface-cli download`` write. Nothing is downloaded unless the caller passes ``download=True``
(mechscope's rule: no model hub is contacted behind your back); when the files are not there, the error
says exactly which folder or file is missing and how to fetch it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mechscope.errors import ConfigError, ModelNotInstalledError

_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.\-]{0,95}/)?[A-Za-z0-9][\w.\-]{0,95}$")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.txt"]


def is_repo_id(name: str) -> bool:
    """Whether ``name`` has the form of a Hugging Face repository id (``org/name`` or ``name``)."""
    return bool(_REPO_ID.match(name)) and ".." not in name and not name.endswith((".gguf", ".json"))


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache directory, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface" / "hub"


def _what_is_missing(name: str, cache: Path, revision: str) -> str:
    repo = cache / ("models--" + name.replace("/", "--"))
    if not cache.is_dir():
        return f"the cache directory {cache} does not exist"
    if not repo.is_dir():
        return f"{cache} has no folder {repo.name}"
    ref = repo / "refs" / revision
    snaps = repo / "snapshots"
    commit = ref.read_text().strip() if ref.is_file() else revision
    snap = snaps / commit
    if not snap.is_dir():
        have = sorted(p.name for p in snaps.iterdir()) if snaps.is_dir() else []
        return (f"{repo} has no snapshot for revision {revision!r} ({ref} missing or pointing to an absent "
                f"folder; snapshots present: {have or 'none'})")
    missing = ["config.json"] if not (snap / "config.json").is_file() else []
    if not any((snap / w).is_file() for w in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES[:2]))
    return f"snapshot {snap} lacks {', '.join(missing)}" if missing else ""


def resolve_hub_name(name: str, *, download: bool = False, revision: str = "main") -> Path:
    """The local snapshot directory of Hugging Face model ``name`` (``download=True`` fetches it first).

    Raises ``ModelNotInstalledError`` naming the missing folder or file when the cache lacks the model.
    """
    if not is_repo_id(name):
        raise ConfigError(f"{name!r} is not a path, a registered model name or a Hugging Face repo id "
                          "(org/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache_dir()
    problem = "" if download else _what_is_missing(name, cache, revision)
    if not problem:
        try:
            path = Path(snapshot_download(name, revision=revision, cache_dir=str(cache), local_files_only=not download,
                                          allow_patterns=_PATTERNS))
        except LocalEntryNotFoundError as e:
            problem = f"huggingface_hub found no local snapshot ({e})"
        except Exception as e:  # network, authentication, a repository that does not exist
            raise ModelNotInstalledError(f"could not download {name!r} from the Hugging Face hub: {e}") from e
        else:
            if not (path / "config.json").is_file():
                problem = f"snapshot {path} lacks config.json"
            else:
                return path
    raise ModelNotInstalledError(
        f"Hugging Face model {name!r} is not in the local cache: {problem}. Fetch it once with "
        f"`huggingface-cli download {name}` (or mechscope.load({name!r}, download=True)); "
        f"the cache is $HF_HUB_CACHE, else $HF_HOME/hub (here {cache})."
    )


__all__ = ["hub_cache_dir", "is_repo_id", "resolve_hub_name"]
