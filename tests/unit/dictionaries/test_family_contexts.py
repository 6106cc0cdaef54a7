"""A planted split: the parent's and each child's top contexts are found at the planted positions and rendered."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mechscope.cli.main import app
from mechscope.dictionaries import io
from mechscope.dictionaries.topk import TopKConfig, TopKDictionary
from mechscope.errors import ConfigError
from mechscope.experiments.scaling import family_contexts, family_markdown, md_escape
from mechscope.experiments.scaling.contexts import held_out_sequences

VOCAB = {0: "a", 1: " (", 2: "(", 3: "x|y", 4: "\n", 5: "*b*", 6: " c", 7: "<d>"}


def _dict(dec: torch.Tensor, hook: str | None = None) -> TopKDictionary:
    d = TopKDictionary(TopKConfig(d_in=dec.shape[1], d_sae=dec.shape[0], k=1, b_dec_init="zeros", hook_name=hook))
    with torch.no_grad():
        d.W_dec.copy_(dec)
        d.W_enc.copy_(dec.T)
        d.b_enc.zero_()
        d.b_dec.zero_()
    return d


def _planted() -> tuple[TopKDictionary, TopKDictionary, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b = torch.linalg.qr(torch.randn(16, 16, generator=g))[0].T  # orthonormal rows
    a1 = torch.nn.functional.normalize(b[0] + 0.6 * b[4], dim=0)  # child 1: the parent's direction + its own
    a2 = torch.nn.functional.normalize(b[0] + 0.6 * b[5], dim=0)  # child 2 (cosine 0.86 to the parent)
    small = _dict(b[:4])
    large = _dict(torch.stack([b[1], a1, b[2], a2, b[3], b[6]]))  # children are large latents 1 and 3
    seqs = torch.randint(0, 8, (4, 8), generator=g)
    keep = torch.ones(4, 8, dtype=torch.bool)
    keep[:, 0] = False
    grid = 0.02 * torch.randn(4, 8, 16, generator=g)
    for (r, c), v in {(1, 3): 3 * a1, (0, 2): 1.5 * a1, (2, 5): 2 * a2}.items():
        grid[r, c] = v
    seqs[1, 3], seqs[2, 5] = 2, 1  # "(" for child 1, " (" for child 2
    return small, large, grid[keep], seqs, keep


def test_planted_family_contexts_and_markdown() -> None:
    small, large, rows, seqs, keep = _planted()
    fam = family_contexts(small, large, 0, rows, seqs, keep, n_examples=2, left=2, right=1,
                          decode=lambda ids: "".join(VOCAB[i] for i in ids))
    assert [c["latent"] for c in fam["children"]] == [1, 3] and fam["children"][0]["cosine"] == pytest.approx(0.857, abs=1e-3)
    top = fam["parent"]["examples"][0]
    assert (top["sequence"], top["position"]) == (1, 3) and top["token"] == "("
    c1, c2 = (c["examples"] for c in fam["children"])
    assert [(e["sequence"], e["position"]) for e in c1] == [(1, 3), (0, 2)]
    assert (c2[0]["sequence"], c2[0]["position"], c2[0]["token"]) == (2, 5, " (")
    assert c2[0]["left"] == "".join(VOCAB[i] for i in seqs[2, 3:5].tolist())
    assert c2[0]["right"] == VOCAB[int(seqs[2, 6])]
    assert c1[0]["act"] > c1[1]["act"] > 0 and 0 < fam["children"][1]["freq"] < 0.5
    md = family_markdown(fam)
    assert md.startswith("4 → 6, parent 0") and md.count("\n| child ") == 2
    assert "<b>⟦␣(⟧</b>" in md and "<b>⟦(⟧</b>" in md
    assert all(line.count(" | ") == 3 for line in md.splitlines() if line.startswith("| parent") or line.startswith("| child"))
    with pytest.raises(ConfigError, match="parent must be"):
        family_contexts(small, large, 4, rows, seqs, keep)
    with pytest.raises(ConfigError, match="keep marks"):
        family_contexts(small, large, 0, rows[1:], seqs, keep)


def test_md_escape() -> None:
    assert md_escape("a|b\n*c* <d> `e` _f_ [g](h) \\") == "a\\|b⏎\\*c\\* &lt;d&gt; \\`e\\` \\_f\\_ \\[g\\](h) \\\\"


def test_family_cli_rejects_bad_parent(tmp_path: Path) -> None:
    small, large, *_ = _planted()
    io.save(small, tmp_path / "s")
    io.save(large, tmp_path / "l")
    for spec in ("6:0", "4", "x:1"):
        res = CliRunner().invoke(app, ["dict", "family", str(tmp_path / "s"), str(tmp_path / "l"), "--parent", spec])
        assert res.exit_code == 2 and "WIDTH:LATENT" in res.output, res.output


def test_held_out_sequences_match_the_model_and_held_out_rows() -> None:
    from mechscope.experiments.scaling import held_out_rows
    from tests.conftest import tiny_model

    m, hook = tiny_model("llama", n_layers=2, d_vocab=300), "blocks.0.hook_resid_post"
    rows, seqs, keep = held_out_sequences(m, hook, corpus="stdlib-docs", n_rows=100, seq_len=16, batch_size=4)
    assert seqs.shape == keep.shape and seqs.shape[1] == 16 and rows.shape[0] == int(keep.sum()) >= 100
    assert not keep[:, 0].any()  # the first position of each sequence is not a row
    got: dict[str, torch.Tensor] = {}
    with m.hooks(fwd=[(hook, lambda x, hook: got.setdefault("x", x))]):
        m(seqs[:2])
    torch.testing.assert_close(rows[:int(keep[:2].sum())], got["x"][keep[:2]].float())
    r, ids = held_out_rows(m, hook, corpus="stdlib-docs", n_rows=100, seq_len=16, batch_size=4)
    torch.testing.assert_close(r, rows[:100])
    assert ids.tolist() == seqs[keep][:100].tolist()


def test_repeated_windows_are_shown_once() -> None:
    small, large, rows, seqs, keep = _planted()
    seqs[0] = seqs[1]  # the same text twice: child 1's second planted hit now repeats its first window
    rows = rows.reshape(4, 7, 16)
    rows[0, 2:4] = rows[1, 2:4]  # position 3 of sequence 0 (row 2) now fires as strongly as (1, 3)
    fam = family_contexts(small, large, 0, rows.reshape(-1, 16), seqs, keep, n_examples=2, left=2, right=1)
    c1 = fam["children"][0]["examples"]
    assert len({(e["left"], e["token"], e["right"]) for e in c1}) == len(c1) == 2
    assert (c1[1]["sequence"], c1[1]["position"]) == (0, 2) and c1[1]["act"] < c1[0]["act"]


def test_family_cli_end_to_end_on_a_tiny_saved_model(tmp_path: Path) -> None:
    import json

    from tests.conftest import tiny_model

    hook = "blocks.0.hook_resid_post"
    m = tiny_model("llama", n_layers=2, d_vocab=300, n_ctx=128)
    m.save(tmp_path / "model")
    g = torch.Generator().manual_seed(1)
    b = torch.linalg.qr(torch.randn(32, 32, generator=g))[0].T
    kids = torch.nn.functional.normalize(b[0] + 0.6 * b[4:6], dim=1)
    small, large = _dict(b[:4], hook), _dict(torch.cat([b[1:4], kids]), hook)  # parent 0 -> large latents 3, 4
    io.save(small, tmp_path / "s")
    io.save(large, tmp_path / "l")
    args = ["dict", "family", str(tmp_path / "l"), str(tmp_path / "s"), "--parent", "4:0", "--model",
            str(tmp_path / "model"), "--eval-rows", "100", "--examples", "2"]
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    fam = json.loads(res.stdout)["families"][0]
    assert fam["small_width"] == 4 and [c["latent"] for c in fam["children"]] == [3, 4]
    rows, seqs, keep = held_out_sequences(m, hook, corpus="stdlib-docs", n_rows=100)
    with torch.no_grad():
        want = small.encode(rows)[:, 0].max()
    assert fam["parent"]["examples"][0]["act"] == pytest.approx(float(want), abs=1e-3)
    top = fam["parent"]["examples"][0]
    assert top["token"] == f"<{int(seqs[top['sequence'], top['position']])}>"  # no tokenizer: ids shown
    md = CliRunner().invoke(app, args)
    assert md.exit_code == 0 and "4 → 5, parent 0" in md.stdout and md.stdout.count("| child ") == 2
