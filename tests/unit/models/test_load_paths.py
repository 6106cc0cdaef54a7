"""``mechscope.load`` on damaged directories raises ``ModelFileError`` naming what is missing, and resolves
Hugging Face names through a (fake, local) Hugging Face cache without any network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mechscope
from mechscope.errors import ConfigError, ModelFileError, ModelNotInstalledError
from mechscope.models.transformer import HookedTransformer
from tests.helpers import tiny_model

transformers = pytest.importorskip("transformers")


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    tiny_model("gpt2").save(tmp_path / "m")
    return tmp_path / "m"


def test_damaged_mechscope_directories(saved: Path, tmp_path: Path) -> None:
    (saved / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match="model.safetensors is missing"):
        mechscope.load(saved)
    tiny_model("gpt2").save(saved)
    text = (saved / "config.json").read_text()
    (saved / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(ModelFileError, match="config.json is not valid JSON"):
        mechscope.load(saved)
    (saved / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelFileError, match="must hold a JSON object"):
        mechscope.load(saved)
    (saved / "config.json").write_text('{"hello": 1}')
    with pytest.raises(ModelFileError, match="neither a mechscope config.*nor a transformers config"):
        mechscope.load(saved)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFileError, match="has no config.json"):
        mechscope.load(empty)


def test_empty_name_and_missing_paths() -> None:
    for bad in ("", "  "):
        with pytest.raises(ConfigError, match="empty model name"):
            mechscope.load(bad)
    with pytest.raises(ModelFileError, match="does not exist"):
        mechscope.load("/no/such/dir/model")


def test_transformers_dir_without_weights(tmp_path: Path) -> None:
    transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=16, vocab_size=31).save_pretrained(tmp_path)
    with pytest.raises(ModelFileError, match="transformers config.json but no weights"):
        mechscope.load(tmp_path)


def _fake_hub_cache(root: Path, repo: str) -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / commit
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=16,
                                                              vocab_size=31))
    hf.save_pretrained(snap)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snap


def test_hugging_face_name_from_the_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = _fake_hub_cache(tmp_path, "tiny-org/tiny-gpt2")
    model = mechscope.load("tiny-org/tiny-gpt2")
    assert isinstance(model, HookedTransformer) and model.cfg.n_layers == 1 and model.cfg.d_vocab == 31
    same = HookedTransformer.from_pretrained("tiny-org/tiny-gpt2")
    toks = torch.tensor([[1, 2, 3]])
    assert torch.equal(model(toks), same(toks))
    (snap / "model.safetensors").unlink()
    with pytest.raises(ModelNotInstalledError, match=r"snapshot .* lacks model.safetensors"):
        mechscope.load("tiny-org/tiny-gpt2")


def test_missing_hugging_face_name_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotInstalledError, match=r"has no folder models--someone--absent.*huggingface-cli download"):
        mechscope.load("someone/absent")
    with pytest.raises(ModelNotInstalledError, match=r"Unknown model name 'smolm2'.*Did you mean.*smollm2"):
        mechscope.load("smolm2")
    (tmp_path / "models--someone--halfway" / "snapshots").mkdir(parents=True)
    with pytest.raises(ModelNotInstalledError, match=r"no snapshot for revision 'main'"):
        mechscope.load("someone/halfway")
