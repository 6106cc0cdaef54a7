"""Loaders of every file kind on damaged files: a saved model directory (its tokenizer file included),
our dictionary format, SAELens's layout, a GGUF file and an activation store. Truncating, overwriting, deleting a file or
editing its JSON gives either a loaded object or a ``MechscopeError`` — never a raw OSError, KeyError,
JSON, safetensors or transformers error."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mechscope
from mechscope.activations.store import ActivationStore
from mechscope.dictionaries import io
from mechscope.dictionaries.registry import config_from_dict, create
from mechscope.models.gguf import read_gguf
from mechscope.tokens import Tokenizer
from tests.helpers import tiny_model

from .strategies import JSON_VALUES, call, fast, mutated

ROOT = Path(tempfile.mkdtemp(prefix="mechscope-prop-"))


def _artifacts() -> dict[str, Path]:
    out = {}
    m = tiny_model("gpt2")
    m.tokenizer = Tokenizer.words([f"w{i}" for i in range(49)], bos="<bos>")
    out["model"] = m.save(ROOT / "model")
    d = create(config_from_dict({"architecture": "topk", "d_in": 8, "d_sae": 16, "k": 4}))
    out["dictionary"] = io.save(d, ROOT / "dictionary")
    out["saelens"] = io.save_saelens(d, ROOT / "saelens")
    store = ActivationStore.create(ROOT / "store", {"blocks.0.hook_resid_post": (8,)}, shard_rows=4)
    store.append({"blocks.0.hook_resid_post": torch.randn(6, 8)})
    store.flush()
    out["store"] = ROOT / "store"
    pytest.importorskip("gguf")
    from tests.unit.models.test_gguf import tiny_hf_state, write_tiny_gguf

    (ROOT / "gguf").mkdir()
    write_tiny_gguf(ROOT / "gguf" / "tiny.gguf", tiny_hf_state())
    out["gguf"] = ROOT / "gguf"
    return out


ARTIFACTS = _artifacts()


def _use_store(p: Path) -> Any:
    s = ActivationStore.open(p)
    return s.n_rows, s.hooks


LOADERS: dict[str, Callable[[Path], Any]] = {
    "model": lambda p: mechscope.load(p)(torch.tensor([[1, 2, 3]])),
    "dictionary": lambda p: io.load(p),
    "saelens": lambda p: io.load(p),
    "store": _use_store,
    "gguf": lambda p: read_gguf(p / "tiny.gguf"),
}


@st.composite
def damage(draw) -> tuple[str, str, str, Any]:
    kind = draw(st.sampled_from(list(LOADERS)))
    src = ARTIFACTS[kind]
    files = sorted(f.name for f in src.iterdir() if f.is_file() and not f.name.startswith("tokenizer"))
    name = draw(st.sampled_from(files))
    size = (src / name).stat().st_size
    how = draw(st.sampled_from(["truncate", "garbage", "flip", "delete", "json"] if name.endswith(".json")
                               else ["truncate", "garbage", "flip", "delete"]))
    if how == "truncate":
        arg: Any = draw(st.integers(0, max(size - 1, 0)))
    elif how == "garbage":
        arg = draw(st.binary(max_size=64))
    elif how == "flip":
        arg = (draw(st.integers(0, max(min(size, 4096) - 1, 0))), draw(st.integers(1, 255)))
    elif how == "json":
        data = json.loads((src / name).read_text())
        arg = draw(mutated(data))[0] if isinstance(data, dict) and data else draw(JSON_VALUES)
    else:
        arg = None
    return kind, name, how, arg


def _apply(path: Path, how: str, arg: Any) -> None:
    if how == "truncate":
        path.write_bytes(path.read_bytes()[:arg])
    elif how == "garbage":
        path.write_bytes(arg)
    elif how == "flip":
        b = bytearray(path.read_bytes())
        if b:
            b[arg[0] % len(b)] ^= arg[1]
        path.write_bytes(bytes(b))
    elif how == "json":
        path.write_text(json.dumps(arg))
    else:
        path.unlink()


@fast(60)
@given(damage())
def test_damaged_files_give_mechscope_errors(case) -> None:
    kind, name, how, arg = case
    src = ARTIFACTS[kind]
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        dst = Path(tmp) / src.name
        shutil.copytree(src, dst)
        _apply(dst / name, how, arg)
        with torch.no_grad():
            call(lambda: LOADERS[kind](dst))


@pytest.mark.parametrize("kind", list(LOADERS))
def test_undamaged_artifacts_load(kind: str) -> None:
    with torch.no_grad():
        result, msg = call(lambda: LOADERS[kind](ARTIFACTS[kind]))
    assert msg is None and result is not None


JSON_FILES = [("model", "config.json"), ("dictionary", "config.json"), ("saelens", "cfg.json"),
              ("store", "manifest.json")]


@fast(60)
@given(st.sampled_from(JSON_FILES).flatmap(
    lambda kf: st.tuples(st.just(kf), mutated(json.loads((ARTIFACTS[kf[0]] / kf[1]).read_text())))))
def test_edited_json_gives_mechscope_errors(case) -> None:
    (kind, name), (data, _) = case
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        dst = Path(tmp) / kind
        shutil.copytree(ARTIFACTS[kind], dst)
        (dst / name).write_text(json.dumps(data))
        with torch.no_grad():
            call(lambda: LOADERS[kind](dst))


@pytest.mark.parametrize(("field", "value"), [("shards", 3), ("shards", [{"file": "x"}]), ("hooks", []),
                                              ("dtype", "int8"), ("shard_rows", 0), ("complete", "no")])
def test_store_manifest_fields_are_checked(field: str, value: Any) -> None:
    from mechscope.errors import ModelFileError

    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        dst = Path(tmp) / "store"
        shutil.copytree(ARTIFACTS["store"], dst)
        data = json.loads((dst / "manifest.json").read_text())
        (dst / "manifest.json").write_text(json.dumps({**data, field: value}))
        with pytest.raises(ModelFileError, match=f"field '{field}' must be"):
            _use_store(dst)


@pytest.mark.parametrize("config", [None, [], "x"])
def test_dictionary_config_field_must_be_an_object(config: Any) -> None:
    from mechscope.errors import ModelFileError

    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        dst = Path(tmp) / "dictionary"
        shutil.copytree(ARTIFACTS["dictionary"], dst)
        data = json.loads((dst / "config.json").read_text())
        (dst / "config.json").write_text(json.dumps({**data, "config": config}))
        with pytest.raises(ModelFileError, match="field 'config' must be an object"):
            io.load(dst)
