"""The batched toy model: instance independence, the dense (PCA-like) regime, the antipodal pair."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import ConfigError, ShapeError
from mechscope.toy import geometry as geo
from mechscope.toy.superposition import ToyModel, ToyModelConfig, ToyTrainConfig, train_toy_model


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_batched_training_equals_each_instance_alone() -> None:
    imp = torch.tensor([[1.0, 0.9, 0.8, 0.7, 0.6], [1.0, 1.0, 1.0, 1.0, 1.0], [0.5, 2.0, 1.0, 0.3, 0.9]])
    prob = torch.tensor([[1.0], [0.3], [0.05]])
    tcfg = ToyTrainConfig(steps=60, batch_size=64, lr=1e-2, log_every=10, progress=False)
    batched = ToyModel(ToyModelConfig(n_features=5, d_hidden=2, n_instances=3, seed=40), importance=imp,
                       feature_probability=prob)
    data = batched.generate_batch(64, step=7)
    res = train_toy_model(batched, tcfg)
    for k in range(3):
        alone = ToyModel(ToyModelConfig(n_features=5, d_hidden=2, n_instances=1, seed=40 + k),
                         importance=imp[k:k + 1], feature_probability=prob[k:k + 1])
        assert torch.equal(alone.generate_batch(64, step=7), data[k:k + 1])  # RNG: bitwise identical
        res1 = train_toy_model(alone, tcfg)
        assert torch.allclose(alone.W, batched.W[k:k + 1], atol=1e-6, rtol=0)
        assert torch.allclose(alone.b_final, batched.b_final[k:k + 1], atol=1e-6, rtol=0)
        assert torch.allclose(res1.loss_history[:, 0], res.loss_history[:, k], atol=1e-6)
    assert not torch.allclose(batched.W[0], batched.W[1])  # different seeds really differ


def test_generated_data_statistics() -> None:
    model = ToyModel(ToyModelConfig(n_features=8, d_hidden=2, n_instances=2), feature_probability=torch.tensor(
        [[0.5], [0.05]]))
    x = model.generate_batch(20000, step=0)
    present = (x > 0).float().mean((1, 2))
    assert abs(float(present[0]) - 0.5) < 0.01 and abs(float(present[1]) - 0.05) < 0.004
    mags = x[0][x[0] > 0]
    assert abs(float(mags.mean()) - 0.5) < 0.01 and float(mags.max()) < 1


def test_dense_inputs_use_exactly_m_orthogonal_dimensions() -> None:
    """S = 0, equal importance: W has orthonormal columns (WᵀW = I_m, so ‖W‖_F² = m: no superposition).

    Equal importance makes the PCA subspace degenerate: the ReLU makes a *rotated* frame slightly better
    than the axis-aligned "m features at norm 1, the rest 0" solution, whose loss is (n − m)/12 exactly
    (dropped features predicted by their mean 1/2, variance 1/12). We check the trained loss is not worse.
    """
    n, m = 6, 3
    model = ToyModel(ToyModelConfig(n_features=n, d_hidden=m, n_instances=2, seed=1))
    res = train_toy_model(model, ToyTrainConfig(steps=1500, batch_size=256, lr=1e-2, progress=False))
    W = model.W.detach()
    assert torch.allclose(W.transpose(1, 2) @ W, torch.eye(m).expand(2, m, m), atol=0.05)
    assert torch.allclose(geo.dimensions_per_feature(W), torch.ones(2), atol=0.03)
    assert (res.final_loss <= (n - m) / 12 + 0.003).all()


def test_dense_decaying_importance_keeps_exactly_the_m_most_important() -> None:
    """S = 0, importance 0.9^i: the m most important features at norm ≈ 1, every other one ≈ 0 (PCA)."""
    n, m = 6, 3
    model = ToyModel(ToyModelConfig(n_features=n, d_hidden=m, n_instances=2, seed=1),
                     importance=0.9 ** torch.arange(float(n)))
    train_toy_model(model, ToyTrainConfig(steps=1500, batch_size=256, lr=1e-2, progress=False))
    norms = geo.feature_norms(model.W.detach())
    assert torch.allclose(norms[:, :m], torch.ones(2, m), atol=0.05)
    assert float(norms[:, m:].max()) < 0.1
    assert (geo.n_represented(model.W.detach()) == m).all()
    top = model.W.detach()[:, :m]
    assert torch.allclose(top @ top.transpose(1, 2), torch.eye(m).expand(2, m, m), atol=0.1)


def test_sparse_n2_m1_forms_antipodal_pair() -> None:
    model = ToyModel(ToyModelConfig(n_features=2, d_hidden=1, n_instances=2, seed=3),
                     feature_probability=torch.tensor([[0.03], [1.0]]))
    train_toy_model(model, ToyTrainConfig(steps=1500, batch_size=512, lr=1e-2, progress=False))
    W = model.W.detach()
    assert geo.phase_n2m1(W).tolist()[0] == geo.PHASE_SUPERPOSITION
    assert torch.allclose(W[0, :, 0].abs(), torch.ones(2), atol=0.1)
    assert float(W[0, 0, 0] * W[0, 1, 0]) < 0
    assert geo.phase_n2m1(W).tolist()[1] != geo.PHASE_SUPERPOSITION  # dense: no antipodal pair
    assert abs(float(W[1].square().sum()) - 1) < 0.05  # one dimension's worth of features


def test_bad_config_and_shapes_are_rejected() -> None:
    with pytest.raises(ConfigError, match="d_hidden"):
        ToyModelConfig(n_features=4, d_hidden=0)
    with pytest.raises(ConfigError, match="lr"):
        ToyTrainConfig(lr=-1.0)
    cfg = ToyModelConfig(n_features=3, d_hidden=1, n_instances=2)
    with pytest.raises(ShapeError, match="importance"):
        ToyModel(cfg, importance=torch.ones(4))
    with pytest.raises(ConfigError, match="feature_probability"):
        ToyModel(cfg, feature_probability=0.0)
    with pytest.raises(ShapeError, match="n_features=3"):
        ToyModel(cfg)(torch.zeros(2, 5, 4))
