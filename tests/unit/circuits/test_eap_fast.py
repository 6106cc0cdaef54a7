"""The fast EAP path's parts: blocked contraction, closed-form norm VJPs, bf16 contraction, auto precision,
vectorised edge cells, and saving scores."""

from __future__ import annotations

import pytest
import torch

from mechscope.circuits import gradient, receiver_grads
from mechscope.circuits.discover import discover
from mechscope.circuits.graph import Graph
from mechscope.circuits.problem import Problem
from mechscope.circuits.scores import EdgeScores
from mechscope.errors import ConfigError
from tests.conftest import tiny_model
from tests.typecheck import ill_typed
from tests.unit.circuits.helpers import logit_diff_metric, pair


def _eap(model: torch.nn.Module, precision: str = "full", seed: int = 0) -> EdgeScores:
    clean, corrupted = pair(seed, b=3, p=6, vocab=model.cfg.d_vocab)
    return discover(model, clean, corrupted, logit_diff_metric(), method="eap", precision=precision)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_contraction_blocks_do_not_change_the_scores(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model(kind, n_layers=4).double()
    want = _eap(model).scores
    assert want.abs().max() > 1e-3
    for per in (1, 3):  # one sender layer per GEMM, and blocks that do not divide the layers
        monkeypatch.setattr(receiver_grads, "LAYERS_PER_BLOCK", per)
        torch.testing.assert_close(_eap(model).scores, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "attn_only"])
def test_closed_form_norm_vjp_equals_autograd(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """RMSNorm (llama), LayerNorm (gpt2), no norm (attn_only): the registry's closed form = the fallback."""
    model = tiny_model(kind).double()
    closed = _eap(model).scores
    monkeypatch.setattr(receiver_grads, "NORM_LINEARISATIONS", {})
    torch.testing.assert_close(_eap(model).scores, closed, rtol=1e-10, atol=1e-12)


def test_bf16_contraction_is_close_to_float32() -> None:
    model = tiny_model("llama", d_model=64)
    full, half = _eap(model, "full"), _eap(model, "bf16")
    assert full.info["precision"] == "float32" and half.info["precision"] == "bfloat16"
    err = (full.scores - half.scores).abs().max()
    assert 0 < err <= 1e-2 * full.scores.abs().max()  # rounded (not the same path), yet close
    top = set(torch.sort(full.scores.abs(), descending=True).indices[:5].tolist())
    assert top == set(torch.sort(half.scores.abs(), descending=True).indices[:5].tolist())


def test_auto_precision_uses_bf16_only_for_large_float32_contractions(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("llama")
    clean, corrupted = pair(vocab=model.cfg.d_vocab)
    problem = Problem(model, Graph.from_model(model), clean, corrupted, logit_diff_metric(), -1)
    assert gradient.contraction_dtype(problem, "auto") == torch.float32  # tiny: full precision
    monkeypatch.setattr(gradient, "AUTO_BF16_FLOPS", 0.0)
    monkeypatch.setattr(gradient, "_native_bf16", lambda: True)
    assert gradient.contraction_dtype(problem, "auto") == torch.bfloat16
    monkeypatch.setattr(gradient, "_native_bf16", lambda: False)
    assert gradient.contraction_dtype(problem, "auto") == torch.float32
    model64 = tiny_model("llama").double()
    p64 = Problem(model64, Graph.from_model(model64), clean, corrupted, logit_diff_metric(), -1)
    monkeypatch.setattr(gradient, "_native_bf16", lambda: True)
    assert gradient.contraction_dtype(p64, "auto") == torch.float64  # float64 models keep their precision
    with pytest.raises(ConfigError, match="precision"), ill_typed():
        gradient.contraction_dtype(problem, "half")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["llama", "neox", "attn_only"])
def test_vectorised_edge_cells_match_the_edge_objects(kind: str) -> None:
    g = Graph.from_model(tiny_model(kind))
    s, r = g.edge_cells
    assert g.n_edges == len(g.edges) == len(s) == len(g)
    assert [f"{g.senders[i].name}->{g.receivers[j].name}" for i, j in zip(s.tolist(), r.tolist())] == g.edge_names


def test_edge_scores_save_and_load_round_trip(tmp_path) -> None:
    scores = _eap(tiny_model("llama"))
    path = scores.save(tmp_path / "scores.safetensors")
    back = EdgeScores.load(path)
    assert back.graph == scores.graph and back.method == "eap" and back.kept is None
    assert torch.equal(back.scores, scores.scores)
    assert back.info["clean"] == scores.info["clean"] and back.info["precision"] == "float32"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="not an EdgeScores file"):
        EdgeScores.load(tmp_path / "other.safetensors")


def test_eap_ig_takes_the_precision_too() -> None:
    model = tiny_model("gpt2", d_model=64)
    clean, corrupted = pair(1, vocab=model.cfg.d_vocab)
    kw = dict(method="eap-ig", steps=3, chunk=2)
    full = discover(model, clean, corrupted, logit_diff_metric(), precision="full", **kw)
    half = discover(model, clean, corrupted, logit_diff_metric(), precision="bf16", **kw)
    assert (full.info["precision"], half.info["precision"]) == ("float32", "bfloat16")
    assert 0 < (full.scores - half.scores).abs().max() <= 1e-2 * full.scores.abs().max()
