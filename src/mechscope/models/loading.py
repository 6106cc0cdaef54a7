"""Loading models: from transformers (``from_hf``), from GGUF files (``from_gguf``), by name (``load``).

Numbers match the source by default: no weight processing happens at load (see ``models/weights.py``
for explicit transforms). ``load(name_or_path)`` accepts a registered name (``"smollm2-135m"``), a
``.gguf`` file, a directory written by ``HookedTransformer.save``, or a local transformers directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mechscope.errors import ConfigError, ModelFileError
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
    import json

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
    """Read a (llama-architecture) GGUF file: dequantised weights and its own tokenizer."""
    from mechscope.models.gguf import read_gguf
    from mechscope.tokens import Tokenizer

    g = read_gguf(Path(path))
    tokenizer = Tokenizer.from_gguf_metadata(g.metadata)
    hf_config = dict(g.hf_config)
    hf_config.setdefault("model_type", "llama")
    model = from_hf_state(hf_config, g.state_dict, tokenizer=tokenizer, dtype=dtype)
    name = str(g.metadata.get("general.name") or Path(path).stem)
    object.__setattr__(model.cfg, "name", name)  # informational label only
    return model


def load(name_or_path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32) -> HookedTransformer:
    """Load a model by registered name (``"smollm2-135m"``), GGUF file, saved directory or HF directory."""
    s = str(name_or_path)
    p = Path(s)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelFileError(f"GGUF file {p} does not exist")
        return from_gguf(p, dtype=dtype)
    if p.is_dir():
        if (p / "model.safetensors").is_file() and (p / "config.json").is_file() and _is_ours(p / "config.json"):
            return HookedTransformer.load(p).to(dtype)
        return from_hf(p, dtype=dtype)
    from mechscope.models.registry import locate_gguf

    return from_gguf(locate_gguf(s), dtype=dtype)


def _is_ours(cfg_path: Path) -> bool:
    import json

    try:
        return "format_version" in json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return False
