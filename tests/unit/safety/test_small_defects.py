"""The smaller defects of issue 17, item 8 (each test failed before its fix)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from mechscope.models.transformer import HookedTransformer
from mechscope.tokens import Tokenizer
from tests.conftest import tiny_cfg

DOCS = Path(__file__).resolve().parents[3] / "docs"


@pytest.mark.parametrize(("make", "sample"), [(lambda: Tokenizer.bytes(), "hi!"),
                                              (lambda: Tokenizer.chars("abcxyz ", bos="^"), "abc xyz"),
                                              (lambda: Tokenizer.integers(40, extra=["="]), "3 5 ="),
                                              (lambda: Tokenizer.words(["red", "blue", "green"], bos="<s>"), "red green")],
                         ids=["bytes", "chars", "integers", "words"])
def test_toy_tokenizers_survive_model_save_and_load(tmp_path: Path, make, sample: str) -> None:
    tok = make()
    model = HookedTransformer(tiny_cfg("llama", d_vocab=max(50, tok.vocab_size)), seed=0, tokenizer=tok)
    model.save(tmp_path / "m")
    back = HookedTransformer.load(tmp_path / "m")
    assert back.tokenizer is not None
    assert back.tokenizer.encode(sample) == tok.encode(sample)
    assert back.tokenizer.bos_token_id == tok.bos_token_id and back.tokenizer.add_bos == tok.add_bos


def test_docs_tokens_toy_example_runs() -> None:
    """Every ``# -> value`` line of the toy-vocabulary example in docs/tokens.md evaluates to that value."""
    text = (DOCS / "tokens.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "Tokenizer.integers" in b)
    env: dict[str, object] = {}
    checked = 0
    for line in block.splitlines():
        code, _, want = line.partition("# ->")
        if want:
            assert eval(code.strip(), env) == eval(want.strip()), line  # noqa: S307 (our own docs)
            checked += 1
        elif code.strip():
            exec(code, env)  # noqa: S102
    assert checked >= 3


def test_ce_loss_recovered_warns_when_zero_ablation_barely_matters() -> None:
    """A transcoder once reported 1.0019 at FVU 0.84: the ratio is noise when zero ≈ clean."""
    from mechscope.dictionaries.evals import evaluate
    from mechscope.dictionaries.topk import TopKConfig, TopKDictionary

    model = HookedTransformer(tiny_cfg("llama", n_layers=2), seed=0).eval()
    hook = "blocks.1.hook_mlp_out"
    with torch.no_grad():
        model.blocks[1].mlp.W_out.mul_(1e-4)  # this MLP hardly changes the predictions
    sae = TopKDictionary(TopKConfig(d_in=32, d_sae=64, k=4, seed=0, hook_name=hook))
    tokens = torch.randint(0, 50, (4, 10), generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match=r"ce_loss_recovered is unreliable for blocks\.1\.hook_mlp_out"):
        res = evaluate(model, sae, tokens)
    assert abs(res.ce_loss_zero - res.ce_loss_clean) < 0.05


def test_run_with_cache_grad_of_leaves_parameter_grads_alone() -> None:
    model = HookedTransformer(tiny_cfg("llama"), seed=0)
    toks = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(0))
    grads = []
    for _ in range(2):
        _, cache = model.run_with_cache(toks, names="blocks.0.hook_resid_post", grad_of=lambda x: x[:, -1, 3].sum())
        grads.append(cache["blocks.0.hook_resid_post_grad"])
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(grads[0], grads[1]) and grads[0].abs().sum() > 0
    w = next(model.parameters())
    w.grad = torch.ones_like(w)
    model.run_with_cache(toks, names="blocks.0.hook_resid_post", grad_of=lambda x: x.sum())
    assert torch.equal(w.grad, torch.ones_like(w))  # an existing .grad is kept as it was


def test_induction_analyze_img_at_short_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`induction analyze --img` used to feed a 96-token sequence to an n_ctx=64 model."""
    from typer.testing import CliRunner

    from mechscope.cli.induction import app
    from mechscope.experiments.induction.config import InductionConfig
    from mechscope.experiments.induction.run import train

    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(60):
        (docs / f"{i}.txt").write_text(f"def f{i}(x):\n    return x + {i}\n" * 30)
    cfg = InductionConfig(corpus=str(docs), tokenizer="bytes", vocab_size=None, n_ctx=64, d_model=16, n_heads=2,
                          d_head=8, batch_size=2, steps=2, eval_every=2, checkpoint_every=2, warmup_steps=1)
    train(cfg, tmp_path / "run", progress=False, only=("two_layer",))
    res = CliRunner().invoke(app, ["analyze", str(tmp_path / "run"), "--img", str(tmp_path / "img"), "--json"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "img" / "attention.html").is_file() and (tmp_path / "img" / "k_composition.png").is_file()
    assert (tmp_path / "img" / "key_path.png").is_file()


def test_grokking_quick_preset_is_selectable_from_the_cli() -> None:
    from typer.testing import CliRunner

    from mechscope.cli.grokking import app
    from mechscope.experiments.grokking.config import PRESETS, QUICK

    assert PRESETS["quick"] is QUICK
    res = CliRunner().invoke(app, ["train", "--help"])
    assert "quick" in res.output
