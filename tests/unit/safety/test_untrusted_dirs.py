"""Untrusted model directories never run code: every transformers load passes trust_remote_code=False and a
config with ``auto_map`` is refused clearly; a local transformers directory brings its tokenizer in any format."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import mechscope  # noqa: E402
from mechscope.errors import UntrustedCodeError  # noqa: E402
from mechscope.models.loading import from_hf  # noqa: E402

SRC = Path(mechscope.__file__).parent


def _gpt2_dir(d: Path) -> Path:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=4, n_positions=64, vocab_size=97)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(d)
    return d


def test_every_transformers_load_in_the_source_passes_trust_remote_code_false() -> None:
    calls = []
    for f in SRC.rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        for m in re.finditer(r"\.from_pretrained\(", text):
            depth, i = 1, m.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            calls.append((f.name, text[m.end():i]))
    assert len(calls) >= 4
    assert [c for c in calls if "trust_remote_code=False" not in c[1]] == []


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_auto_map_is_refused_naming_the_option(tmp_path: Path, where: str) -> None:
    d = _gpt2_dir(tmp_path)
    (d / "evil.py").write_text(f"open({str(tmp_path / 'pwned')!r}, 'w').write('x')\n")
    f = d / where
    data = json.loads(f.read_text()) if f.is_file() else {}
    data["auto_map"] = {"AutoModelForCausalLM": "evil.Evil", "AutoTokenizer": ["evil.Evil", None]}
    f.write_text(json.dumps(data))
    for load in (from_hf, mechscope.load):
        with pytest.raises(UntrustedCodeError, match="trust_remote_code=True") as e:
            load(d)
        assert "auto_map" in str(e.value)
    assert not (tmp_path / "pwned").exists()


def test_from_hf_dir_attaches_a_vocab_json_tokenizer(tmp_path: Path) -> None:
    """GPT-2-style directories ship vocab.json + merges.txt, not tokenizer.json."""
    from tokenizers.pre_tokenizers import ByteLevel

    d = _gpt2_dir(tmp_path)
    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet())[:96])} | {"<|endoftext|>": 96}
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    model = from_hf(d)
    assert model.tokenizer is not None
    ids = model.tokenizer.encode("abc")
    assert len(ids) == 3 and model.tokenizer.to_string(ids) == "abc"
