"""Gradients: TopK/BatchTopK sparse kernels vs autograd of the dense formula and finite differences;
JumpReLU straight-through estimators vs the derivatives of the expectations they estimate."""

from __future__ import annotations

import math

import torch

from mechscope.dictionaries.base import Dictionary, TrainContext
from mechscope.dictionaries.jumprelu import jumprelu, step

from .conftest import D_IN, build

CTX = TrainContext(1.0, None, 0)


def _grads(d: Dictionary, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    d.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in d.named_parameters() if p.grad is not None}


def _dense_reference(d: Dictionary, x: torch.Tensor) -> torch.Tensor:
    return Dictionary.training_losses(d, x, x, CTX).loss  # base class: autograd through the dense formula


def test_topk_sparse_gradients_equal_dense_autograd() -> None:
    d = build("topk").double()
    x = torch.randn(7, D_IN, dtype=torch.float64)
    fast, ref = _grads(d, d.training_losses(x, x, CTX).loss), _grads(d, _dense_reference(d, x))
    assert fast.keys() == ref.keys() == {"W_enc", "b_enc", "W_dec", "b_dec"}
    for name in fast:
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-10, atol=1e-12)


def test_batchtopk_sparse_gradients_equal_dense_autograd() -> None:
    d = build("batchtopk").double()
    x = torch.randn(7, D_IN, dtype=torch.float64)
    fast, ref = _grads(d, d.training_losses(x, x, CTX).loss), _grads(d, _dense_reference(d, x))
    for name in ref:
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-10, atol=1e-12)
    assert float(d.threshold) > 0  # the inference threshold was estimated


def test_topk_gradient_matches_finite_differences() -> None:
    """Away from ties the selection is locally constant, so central differences see the same gradient."""
    d = build("topk").double()
    x = torch.randn(4, D_IN, dtype=torch.float64)
    g = _grads(d, d.training_losses(x, x, CTX).loss)
    h = 1e-6
    for name, idx in [("W_enc", (1, 2)), ("b_enc", (5,)), ("W_dec", (3, 1)), ("b_dec", (0,))]:
        p = getattr(d, name)
        with torch.no_grad():
            p[idx] += h
            up = float(d.training_losses(x, x, CTX).loss)
            p[idx] -= 2 * h
            down = float(d.training_losses(x, x, CTX).loss)
            p[idx] += h
        assert math.isclose(g[name][idx].item(), (up - down) / (2 * h), rel_tol=1e-5, abs_tol=1e-7), name


def test_topk_aux_loss_trains_only_dead_latents() -> None:
    d = build("topk", aux_k=2).double()
    x = torch.randn(6, D_IN, dtype=torch.float64)
    dead = torch.zeros(12, dtype=torch.bool)
    dead[[0, 4, 7]] = True
    out = d.training_losses(x, x, TrainContext(1.0, dead, 5))
    aux_grads = _grads(d, out.aux)
    assert out.aux > 0
    assert (aux_grads["b_enc"][~dead] == 0).all() and (aux_grads["b_enc"][dead] != 0).any()
    # hand formula: top-2 dead pre-activations (relu) reconstruct the residual, scaled by min(3/2, 1)
    pre = ((x - d.b_dec) @ d.W_enc + d.b_enc).detach()
    masked = pre.masked_fill(~dead, -math.inf)
    top = masked.topk(2, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values.clamp(min=0))
    resid = x - out.recons
    want = (1 / 32) * ((acts @ d.W_dec.detach() - resid) ** 2).sum(-1).mean()
    torch.testing.assert_close(out.aux.detach(), want)


def test_jumprelu_ste_estimates_derivative_of_expectation() -> None:
    """Mean over N(0,1) samples: d/dθ E[x H(x-θ)] = -θ φ(θ) and d/dθ E[H(x-θ)] = -φ(θ)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400_000, 1, generator=g, dtype=torch.float64)
    theta0, eps = 0.7, 0.05
    phi = math.exp(-theta0**2 / 2) / math.sqrt(2 * math.pi)
    theta = torch.tensor([theta0], dtype=torch.float64, requires_grad=True)
    jumprelu(x, theta, eps).mean().backward()
    assert math.isclose(theta.grad.item(), -theta0 * phi, rel_tol=0.03)
    theta.grad = None
    step(x, theta, eps).mean().backward()
    assert math.isclose(theta.grad.item(), -phi, rel_tol=0.03)
    # and against a finite difference of the sample average itself (wide enough to be smooth)
    h = 0.02
    fd = ((x * (x > theta0 + h)).mean() - (x * (x > theta0 - h)).mean()) / (2 * h)
    assert math.isclose(fd.item(), -theta0 * phi, rel_tol=0.05)


def test_jumprelu_pass_through_gradient_and_no_step_gradient_to_input() -> None:
    x = torch.tensor([[0.1, 0.5, 1.0]], requires_grad=True)
    theta = torch.tensor([0.3, 0.3, 0.3], requires_grad=True)
    jumprelu(x, theta, 0.1).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([[0.0, 1.0, 1.0]]))
    x.grad = None
    step(x, theta, 0.1).sum().backward()
    assert x.grad is None or (x.grad == 0).all()
    # rectangle kernel: only x within eps/2 of theta contributes: none here -> zero threshold gradient
    torch.testing.assert_close(theta.grad, torch.zeros(3))


def test_relu_fused_path_equals_dense_autograd() -> None:
    """ReLU's hand-written backward (in-place ReLU, L1 fused into the matmul bias) equals autograd exactly."""
    for apply_b_dec in (True, False):
        d = build("relu", apply_b_dec_to_input=apply_b_dec, input_scale=1.7, output_scale=1.7).double()
        x = torch.randn(9, D_IN, dtype=torch.float64)
        ctx = TrainContext(0.7, None, 0)
        fast_out, ref_out = d.training_losses(x, x, ctx), Dictionary.training_losses(d, x, x, ctx)
        assert torch.equal(fast_out.fired, ref_out.fired) and float(fast_out.l0) == float(ref_out.l0)
        torch.testing.assert_close(fast_out.loss, ref_out.loss, rtol=1e-12, atol=0)
        fast, ref = _grads(d, fast_out.loss), _grads(d, ref_out.loss)
        assert fast.keys() == ref.keys() == {"W_enc", "b_enc", "W_dec", "b_dec"}
        for name in fast:
            torch.testing.assert_close(fast[name], ref[name], rtol=1e-10, atol=1e-12)
    # off logging steps only whether each latent fired is promised (0/1), and l0 is NaN
    quick = d.training_losses(x, x, TrainContext(1.0, None, 0, stats=False))
    assert torch.equal(quick.fired, (ref_out.fired > 0).long()) and math.isnan(float(quick.l0))


def test_jumprelu_fused_path_equals_the_straight_through_reference() -> None:
    """JumpReLU's fused step (both STEs combined in one backward) equals autograd through ``jumprelu``/``step``."""
    d = build("jumprelu", bandwidth=0.5).double()
    with torch.no_grad():
        d.threshold.uniform_(0.0, 0.6, generator=torch.Generator().manual_seed(3))
    x = torch.randn(40, D_IN, dtype=torch.float64)
    ctx = TrainContext(0.7, None, 0)
    fast_out, ref_out = d.training_losses(x, x, ctx), Dictionary.training_losses(d, x, x, ctx)
    assert torch.equal(fast_out.fired, ref_out.fired)
    torch.testing.assert_close(fast_out.loss, ref_out.loss, rtol=1e-12, atol=0)
    fast, ref = _grads(d, fast_out.loss), _grads(d, ref_out.loss)
    assert fast.keys() == ref.keys() == {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}
    assert float(ref["threshold"].abs().max()) > 0  # the rectangle window caught some pre-activations
    for name in fast:
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-10, atol=1e-12)
