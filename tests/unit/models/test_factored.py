"""FactoredMatrix against dense computations; W_QK / W_OV against the model's own activations."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import ShapeError
from mechscope.models.config import AttentionConfig, ModelConfig, NormConfig, PositionalConfig
from mechscope.models.factored import W_OV, W_QK, FactoredMatrix, OV_circuit, QK_circuit
from mechscope.models.transformer import HookedTransformer

torch.set_num_threads(1)
D = torch.float64


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


@pytest.fixture
def fm() -> FactoredMatrix:
    return FactoredMatrix(rand(2, 3, 7, 4, seed=1), rand(2, 3, 4, 6, seed=2))


def test_shape_and_products(fm: FactoredMatrix) -> None:
    dense = fm.A @ fm.B
    assert fm.shape == dense.shape and fm.ndim == 4 and fm.mdim == 4
    torch.testing.assert_close(fm.AB, dense)
    torch.testing.assert_close(fm.T.AB, dense.mT)
    M = rand(6, 5, seed=3)
    right = fm @ M
    assert isinstance(right, FactoredMatrix)
    torch.testing.assert_close(right.AB, dense @ M)
    L = rand(5, 7, seed=4)
    left = L @ fm
    assert isinstance(left, FactoredMatrix)
    torch.testing.assert_close(left.AB, L @ dense)
    v = rand(6, seed=5)
    torch.testing.assert_close(fm @ v, dense @ v)
    torch.testing.assert_close(rand(7, seed=6) @ fm, rand(7, seed=6) @ dense)
    torch.testing.assert_close((fm * 2.5).AB, 2.5 * dense)


def test_factored_times_factored_keeps_small_inner_dim(fm: FactoredMatrix) -> None:
    other = FactoredMatrix(rand(6, 2, seed=7), rand(2, 9, seed=8))
    prod = fm @ other
    assert prod.mdim == 2
    torch.testing.assert_close(prod.AB, fm.AB @ other.AB)
    prod2 = FactoredMatrix(rand(7, 2, seed=9), rand(2, 7, seed=10)) @ fm
    assert prod2.mdim == 2
    torch.testing.assert_close(prod2.AB, (rand(7, 2, seed=9) @ rand(2, 7, seed=10)) @ fm.AB)


def test_svd_matches_dense(fm: FactoredMatrix) -> None:
    dense = fm.AB
    torch.testing.assert_close(fm.S, torch.linalg.svdvals(dense)[..., :4])
    U, S, Vh = fm.svd()
    assert U.shape == (2, 3, 7, 4) and Vh.shape == (2, 3, 4, 6)
    torch.testing.assert_close(U @ torch.diag_embed(S) @ Vh, dense)
    torch.testing.assert_close(U.mT @ U, torch.eye(4, dtype=D).expand(2, 3, 4, 4))
    torch.testing.assert_close(fm.make_even().AB, dense)


def test_svd_when_inner_dim_exceeds_outer() -> None:
    f = FactoredMatrix(rand(3, 8, seed=11), rand(8, 5, seed=12))
    torch.testing.assert_close(f.S, torch.linalg.svdvals(f.AB))
    torch.testing.assert_close(f.U @ torch.diag(f.S) @ f.Vh, f.AB)


def test_norm_matches_dense(fm: FactoredMatrix) -> None:
    torch.testing.assert_close(fm.norm(), torch.linalg.matrix_norm(fm.AB))


def test_eigenvalues_match_dense_nonzero_eigenvalues() -> None:
    f = FactoredMatrix(rand(2, 6, 3, seed=13), rand(2, 3, 6, seed=14))
    ev = f.eigenvalues
    assert ev.shape == (2, 3)
    dense = torch.linalg.eigvals(f.AB)  # [2 6]: 3 nonzero + 3 ~zero
    for b in range(2):
        dist = (ev[b][:, None] - dense[b][None, :]).abs()
        assert dist.min(dim=1).values.max() < 1e-8
        big = dense[b][dense[b].abs() > 1e-8]
        assert big.numel() == 3
    with pytest.raises(ShapeError, match="square"):
        _ = FactoredMatrix(rand(5, 2), rand(2, 4)).eigenvalues


def test_indexing_and_corner(fm: FactoredMatrix) -> None:
    dense = fm.AB
    torch.testing.assert_close(fm[1, 2].AB, dense[1, 2])
    torch.testing.assert_close(fm[1].AB, dense[1])
    torch.testing.assert_close(fm[:, 1:].AB, dense[:, 1:])
    torch.testing.assert_close(fm[0, 1, 2:5, :3].AB, dense[0, 1, 2:5, :3])
    torch.testing.assert_close(fm.get_corner(3), dense[..., :3, :3])
    with pytest.raises(IndexError):
        fm[0, 1, 2]
    # broadcasting leading dims
    b = FactoredMatrix(rand(3, 7, 4, seed=15), rand(2, 1, 4, 6, seed=16))
    assert b.shape == (2, 3, 7, 6)
    torch.testing.assert_close(b[1, 2].AB, (b.A @ b.B)[1, 2])


def test_shape_errors() -> None:
    with pytest.raises(ShapeError, match="last dim"):
        FactoredMatrix(rand(3, 4), rand(5, 6))
    with pytest.raises(ShapeError):
        FactoredMatrix(rand(3, 4), rand(4, 6)) @ rand(5, 2)


def _model(n_kv: int | None) -> HookedTransformer:
    cfg = ModelConfig(d_model=16, n_layers=2, d_vocab=19, n_ctx=8,
                      attention=AttentionConfig(n_heads=4, d_head=4, n_kv_heads=n_kv), mlp=None,
                      norm=NormConfig(kind="none"), positional=PositionalConfig(kind="learned"))
    return HookedTransformer(cfg, seed=0).eval()


@pytest.mark.parametrize("n_kv", [None, 2])
def test_circuits_match_model_activations(n_kv: int | None) -> None:
    model = _model(n_kv)
    toks = torch.randint(0, 19, (1, 6), generator=torch.Generator().manual_seed(0))
    names = ["blocks.1.hook_resid_pre", "blocks.1.attn.hook_attn_scores", "blocks.1.attn.hook_pattern",
             "blocks.1.attn.hook_result"]
    _, cache = model.run_with_cache(toks, names=names)
    x = cache["blocks.1.hook_resid_pre"][0]  # no norm: the attention input is the residual
    qk, ov = W_QK(model), W_OV(model)
    assert qk.shape == (2, 4, 16, 16) and ov.shape == (2, 4, 16, 16)
    scores = torch.einsum("qd,hde,ke->hqk", x, W_QK(model, 1).AB, x) * model.cfg.attention.attn_scale
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    got = cache["blocks.1.attn.hook_attn_scores"][0]
    torch.testing.assert_close(got[:, causal], scores[:, causal], atol=1e-5, rtol=1e-5)
    pattern = cache["blocks.1.attn.hook_pattern"][0]
    result = torch.einsum("hqk,kd,hde->qhe", pattern, x, ov[1].AB)
    torch.testing.assert_close(cache["blocks.1.attn.hook_result"][0], result, atol=1e-5, rtol=1e-5)


def test_token_circuits_match_dense() -> None:
    model = _model(2)
    W_E, W_U = model.W_E.detach(), model.W_U.detach()
    ov = OV_circuit(model)
    assert ov.shape == (2, 4, 19, 19) and ov.mdim == 4
    torch.testing.assert_close(ov.AB, W_E @ W_OV(model).AB @ W_U, atol=1e-5, rtol=1e-5)
    qk = QK_circuit(model, layer=0)
    assert qk.shape == (4, 19, 19)
    torch.testing.assert_close(qk.AB, W_E @ W_QK(model, 0).AB @ W_E.T, atol=1e-5, rtol=1e-5)
