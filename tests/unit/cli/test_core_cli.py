"""The top-level CLI commands on tiny saved models, and their clean errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mechscope.cli.main import app
from tests.helpers import tiny_model

runner = CliRunner()


def test_info_lists_every_hook_with_its_shape(tmp_path) -> None:
    model = tiny_model("gpt2")
    model.save(tmp_path)
    res = runner.invoke(app, ["info", str(tmp_path), "--json", "--pos", "5"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n_params"] == sum(p.numel() for p in model.parameters())  # untied: W_U is its own
    assert set(out["hooks"]) == set(model.hook_dict)
    assert out["hooks"]["blocks.1.attn.hook_pattern"] == [1, 4, 5, 5]


def test_generate_and_info_text(tmp_path) -> None:
    from mechscope.models.generate import generate
    from mechscope.tokens import Tokenizer

    model = tiny_model("llama")
    model.tokenizer = Tokenizer.chars("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX")  # 50 ids = d_vocab
    model.save(tmp_path)
    res = runner.invoke(app, ["info", str(tmp_path)])
    assert res.exit_code == 0 and f"{len(model.hook_dict)} hook points" in res.stdout
    for name in model.hook_dict:  # every block's hooks, not only block 0's
        assert f"  {name} " in res.stdout
    res = runner.invoke(app, ["generate", str(tmp_path), "abc", "-n", "6"])
    assert res.exit_code == 0, res.output
    expected = generate(model, ["abc"], max_new_tokens=6).texts[0]
    assert len(expected) == 6 and res.stdout.strip() == "abc" + expected


def test_bad_model_path_is_one_clear_line(tmp_path) -> None:
    res = runner.invoke(app, ["info", str(tmp_path / "nope.gguf")])
    assert res.exit_code == 2
    assert "does not exist" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["info", "no-such-model"])
    assert res.exit_code == 2 and "smollm2" in res.output
