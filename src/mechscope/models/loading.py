"""Loading models: from transformers (``from_hf``), from GGUF files (``from_gguf``), by name (``load``).

Numbers match the source by default: no weight processing happens at load (see ``models/weights.py``
for explicit transforms). ``load(name_or_path)`` accepts a registered name (``"smollm2-135m"``), a
``.gguf`` file, a directory written by ``HookedTransformer.save``, or a local transformers directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from mechscope.errors import ConfigError, MechscopeError, ModelFileError, ModelNotInstalledError
from mechscope.io_safety import read_json_object
from mechscope.models.adapters import adapter_for
from mechscope.models.transformer import HookedTransformer, load_state


def from_hf_state(hf_config: dict[str, Any], hf_state: dict[str, torch.Tensor], *, tokenizer: Any = None,
                  dtype: torch.dtype = torch.float32) -> HookedTransformer:
    """Build a model from a transformers config dict and state dict (names as in the HF model)."""
    model_type = hf_config.get("model_type") or hf_config.get("architecture")
    if model_type is None:
        raise ConfigError("hf_config has no 'model_type'; expected one of gpt2, gpt_neox, llama, qwen2, mistral")
    adapter = adapter_for(str(model_type))
    cfg = adapter.config_from_hf(hf_config)
    state = adapter.convert(hf_state, cfg)
    with torch.device("meta"):
        model = HookedTransformer(cfg, tokenizer=tokenizer)
    model = model.to_empty(device="cpu")
    load_state(model, state, source=f"{model_type} state dict")
    model.setup()
    return model.to(dtype).eval()


def from_hf(model_or_path: Any, *, dtype: torch.dtype = torch.float32, with_tokenizer: bool = True) -> HookedTransformer:
    """Convert a transformers causal LM (an instance, or a local directory) into a ``HookedTransformer``.

    The HF model is not modified. Supported families: GPT-2, GPT-NeoX/Pythia, Llama, Qwen2, Mistral.
    """
    hf_model = model_or_path
    tokenizer = None
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        if not path.is_dir():
            raise ModelFileError(f"{path} is not a directory; from_hf takes a transformers model or a local "
                                 "directory with config.json and weights (nothing is downloaded)")
        from transformers import AutoModelForCausalLM

        refuse_remote_code(path)
        hf_model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, trust_remote_code=False,
                                                        dtype=torch.float32)
        if with_tokenizer:
            tokenizer = _hf_tokenizer(path)
    hf_cfg = hf_model.config.to_dict()
    return from_hf_state(hf_cfg, dict(hf_model.state_dict()), tokenizer=tokenizer, dtype=dtype)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")


def refuse_remote_code(path: Path) -> None:
    """Raise ``UntrustedCodeError`` if ``path``'s config asks transformers to run the directory's own code.

    Such a directory (``auto_map`` in ``config.json`` or ``tokenizer_config.json``) only loads with
    transformers' ``trust_remote_code=True``, which executes arbitrary Python from the directory;
    mechscope never passes it (every load is ``trust_remote_code=False``).
    """

    from mechscope.errors import UntrustedCodeError

    for name in ("config.json", "tokenizer_config.json"):
        f = path / name
        try:
            data = json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
        except (OSError, ValueError):
            continue  # unreadable configs are reported by the loader itself
        if isinstance(data, dict) and "auto_map" in data:
            raise UntrustedCodeError(
                f"{f} has 'auto_map': loading {path} would run Python code from that directory, which "
                "mechscope never does (it loads with trust_remote_code=False). If you have read and trust the "
                "code, load it yourself with transformers' trust_remote_code=True and pass the model object to "
                "mechscope.from_hf(model)")


def _hf_tokenizer(path: Path) -> Any:
    """The directory's tokenizer (any transformers format: tokenizer.json, vocab.json+merges.txt, ...)."""
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    from mechscope.tokens import Tokenizer

    try:
        hf_tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as e:
        import warnings

        warnings.warn(f"{path}: the tokenizer files could not be loaded ({type(e).__name__}: {e}); "
                      "the model has no tokenizer", stacklevel=3)
        return None
    return Tokenizer.from_hf(hf_tok)


def from_gguf(path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32) -> HookedTransformer:
    """Read a GGUF file (``llama``, ``qwen2``, ``qwen3``, ``gemma3``): dequantised weights and its own tokenizer.

    The tokenizer is rebuilt from the file's vocabulary (byte-level BPE ``gpt2`` with llama.cpp's
    pre-tokenizers, or sentencepiece ``llama`` such as Gemma's: ``models/gguf_tokenizer.py``). A file without
    a vocabulary, or of a kind mechscope cannot rebuild faithfully, leaves ``model.tokenizer`` None with a
    warning naming the kind, what is supported and how to attach one.
    """
    from mechscope.models.gguf import read_gguf
    from mechscope.tokens import Tokenizer

    g = read_gguf(Path(path))
    try:
        tokenizer = Tokenizer.from_gguf_metadata(g.metadata)
    except ModelFileError as e:
        import warnings

        warnings.warn(f"{path}: no tokenizer attached ({e}). Pass token ids, or attach transformers' conversion: "
                      "model.tokenizer = Tokenizer.from_hf(AutoTokenizer.from_pretrained(directory, "
                      "gguf_file=name, trust_remote_code=False))", stacklevel=2)
        tokenizer = None
    model = from_hf_state(dict(g.hf_config), g.state_dict, tokenizer=tokenizer, dtype=dtype)
    name = str(g.metadata.get("general.name") or Path(path).stem)
    object.__setattr__(model.cfg, "name", name)  # informational label only
    return model


def load(name_or_path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32,
         download: bool = False) -> HookedTransformer:
    """Load a model by registered name (``"smollm2-135m"``), GGUF file, saved directory, HF directory, or a
    Hugging Face name (``"gpt2"``, ``"EleutherAI/pythia-70m"``) found in the local Hugging Face cache
    (``download=True`` fetches it first; see ``models/hub.py``).

    A damaged directory (empty, missing weights, truncated config) raises ``ModelFileError`` saying what
    is missing.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ConfigError(f"load() takes a model name or a path, got {type(name_or_path).__name__}")
    s = os.fspath(name_or_path)
    if not isinstance(s, str) or not s.strip():
        raise ConfigError("load() got an empty model name; give a registered name (smollm2-135m), a .gguf file, "
                          "a model directory or a Hugging Face name")
    p = Path(s)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelFileError(f"GGUF file {p} does not exist")
        return from_gguf(p, dtype=dtype)
    if p.is_dir():
        return _load_dir(p, dtype)
    from mechscope.models.hub import is_repo_id, resolve_hub_name
    from mechscope.models.registry import locate_gguf, resolve

    if p.exists():
        raise ModelFileError(f"{p} is a file but not a .gguf; give a .gguf file or a model directory")
    try:
        resolve(s)
    except ConfigError as unknown:
        if "/" in s and not is_repo_id(s):
            raise ModelFileError(f"{p} does not exist (not a file or directory)") from None
        if not is_repo_id(s):
            raise
        try:
            snapshot = resolve_hub_name(s, download=download)
        except ModelNotInstalledError as e:
            if "/" in s:
                raise
            raise ModelNotInstalledError(f"{unknown} As a Hugging Face name: {e}") from None
        return _load_dir(snapshot, dtype)
    return from_gguf(locate_gguf(s), dtype=dtype)


def _load_dir(p: Path, dtype: torch.dtype) -> HookedTransformer:
    """A mechscope save directory or a transformers directory, checked for the files each needs."""
    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        raise ModelFileError(f"{p} has no config.json: a model directory holds config.json plus weights "
                             "(model.safetensors), as written by model.save(dir) or transformers' save_pretrained")
    cfg = read_json_object(cfg_path, ModelFileError)
    if "format_version" in cfg:  # ours: HookedTransformer.load names a missing weights file
        return HookedTransformer.load(p).to(dtype)
    if "model_type" not in cfg:
        raise ModelFileError(f"{cfg_path} is neither a mechscope config (no format_version) nor a transformers "
                             "config (no model_type)")
    if not any((p / w).is_file() for w in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")):
        raise ModelFileError(f"{p} has a transformers config.json but no weights (model.safetensors)")
    try:
        return from_hf(p, dtype=dtype)
    except MechscopeError:
        raise
    except (OSError, ValueError, KeyError) as e:  # transformers' errors on damaged files
        raise ModelFileError(f"transformers could not load {p}: {e}") from e
