"""Gradient methods on edge masks: EAP (Syed et al.) and EAP-IG (Hanna et al.).

Both differentiate the mean metric with respect to the float edge masks of the patchable forward run on the
clean input. At ``m = 0`` the gradient of an edge's mask is ``(patch_s - clean_s) · d metric / d input_r``
summed over batch and positions: attribution patching on the edge, the first-order estimate of patching it.

* ``eap``: one corrupted forward (patch values) and one clean forward + input-only backward on the fast path
  of ``receiver_grads`` (no per-head residual copies; it also gives the clean sender outputs).
* ``eap-ig`` with ``variant="inputs"`` (Hanna et al.'s default): the same product, with the receiver
  gradients averaged over ``steps`` inputs interpolated from corrupted to clean embeddings
  (``input = corrupted + k/steps · (clean - corrupted)``, k = 1..steps; the ``input`` row of the mask does
  the interpolation). ``steps=1`` is EAP.
* ``eap-ig`` with ``variant="activations"``: every edge's mask moves together from 0 (clean) to 1
  (corrupted); the full gradient (through the senders' changing outputs) is averaged over the midpoints.
  Integrated gradients on the masks, so the scores sum to ``corrupted - clean`` as ``steps`` grows
  (completeness).

The steps run as variants in the batch dimension, ``chunk`` variants per forward; ``inputs`` steps use the
fast path too (an interpolated input is the embeddings shifted by ``f · (corrupted - clean)``). On the fast
path ``precision`` picks the contraction's dtype (``contraction_dtype``: bf16 for large float32 graphs by
default; its measured error vs float32 is in docs/circuits.md).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mechscope.circuits.problem import Problem
from mechscope.circuits.receiver_grads import edge_gradient, sender_diffs
from mechscope.circuits.scores import EdgeScores
from mechscope.errors import ConfigError


def _mask_grad(problem: Problem, masks: Tensor, fixed: Tensor | None) -> Tensor:
    """Sum over variants of d(mean metric)/d masks, per edge [n_edges]."""
    m = masks.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        value = problem.run(m, fixed=fixed).mean(dim=1).sum()
        (grad,) = torch.autograd.grad(value, [m])
    return problem.graph.gather(grad).sum(0)


Precision = Literal["auto", "full", "bf16"]

AUTO_BF16_FLOPS = 1e9
"""``precision="auto"`` contracts in bfloat16 from this many multiply-adds x 2 (batch x pos x d_model x
edges x 2) on: below it the contraction is cheap and full precision costs nothing."""


def _native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 GEMMs natively on this CPU (else bf16 would be slower, not faster)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def contraction_dtype(problem: Problem, precision: Precision) -> torch.dtype:
    """The dtype of the sender x receiver contraction: the model's own (``full``), bfloat16 with float32
    accumulation (``bf16``), or ``auto``: bfloat16 for a float32 model whose contraction is at least
    ``AUTO_BF16_FLOPS`` on a CPU with native bf16 GEMMs, else full (docs/circuits.md states the error)."""
    if precision not in ("auto", "full", "bf16"):
        raise ConfigError(f"precision must be 'auto', 'full' or 'bf16', got {precision!r}")
    own = problem.patch[0].dtype
    if precision == "auto":
        b, p = problem.clean.shape
        flops = 2 * b * p * problem.model.cfg.d_model * problem.graph.n_edges
        big = own == torch.float32 and flops >= AUTO_BF16_FLOPS
        return torch.bfloat16 if big and _native_bf16() else own
    return torch.bfloat16 if precision == "bf16" else own


def eap(problem: Problem, precision: Precision = "auto") -> EdgeScores:
    """Edge attribution patching: first-order effect of patching each edge alone.

    One forward + input-only backward on the clean tokens (``receiver_grads``: no per-head copies), which
    also gives the clean sender outputs, plus the corrupted forward the problem already ran. ``precision``:
    the dtype of the sender x receiver contraction (``contraction_dtype``; ``info["precision"]`` records
    the one used)."""
    g = problem.graph
    dtype = contraction_dtype(problem, precision)
    dense, _, values = edge_gradient(problem.model, g, problem.clean, problem.metric,
                                     lambda raw: sender_diffs(problem.model, g, problem.patch, raw, dtype),
                                     readout=problem.readout)
    problem.forwards += 1
    problem.set_clean(None, values[0])
    return EdgeScores(g, g.gather(dense), "eap", info={**_info(problem), "precision": _name(dtype)})


def eap_ig(problem: Problem, steps: int = 5, variant: Literal["inputs", "activations"] = "inputs",
           chunk: int = 8, precision: Precision = "auto") -> EdgeScores:
    """EAP with integrated gradients (module docstring)."""
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1, got {chunk}")
    g = problem.graph
    dtype = contraction_dtype(problem, precision) if variant == "inputs" else problem.patch[0].dtype
    valid = g.valid.float()
    total = torch.zeros(g.n_edges, dtype=problem.patch[0].dtype)
    if variant == "inputs":
        # patched fraction of the input, clean (0) first: that forward's sender outputs are the clean ones
        fractions = [k / steps for k in range(steps)]
        built: list[Tensor] = []
        with torch.no_grad():  # the clean embeddings alone (stop_at_layer=0), not a clean forward
            embed = problem.model(problem.clean, stop_at_layer=0)
        delta = (problem.patch[0][:, :, 0] - embed).expand(problem.clean.shape[0], -1, -1)  # [batch pos d_model]

        def diffs(raw: list[Tensor]) -> Tensor:
            if not built:  # the first call's variant 0 is the clean step
                built.append(sender_diffs(problem.model, g, problem.patch, raw, dtype))
            return built[0]

        for i in range(0, steps, chunk):  # interpolated inputs = shifted embeddings (receiver_grads)
            chunk_f = tuple(fractions[i:i + chunk])
            dense, _, values = edge_gradient(problem.model, g, problem.clean, problem.metric, diffs,
                                             readout=problem.readout, fractions=chunk_f, delta=delta)
            problem.forwards += 1
            if i == 0 and not problem.clean_outputs_known:
                problem.set_clean(None, values[0])
            total = total + g.gather(dense).to(total.dtype)
    elif variant == "activations":
        fractions = [(k + 0.5) / steps for k in range(steps)]
        for i in range(0, steps, chunk):
            m = torch.stack([valid * f for f in fractions[i:i + chunk]])
            total = total + _mask_grad(problem, m, None).to(total.dtype)
    else:
        raise ConfigError(f"eap-ig variant must be 'inputs' or 'activations', got {variant!r}")
    return EdgeScores(g, total / steps, "eap-ig",
                      info={**_info(problem), "steps": steps, "variant": variant,
                            "precision": _name(dtype)})


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _info(problem: Problem) -> dict[str, float | int | str]:
    return {"clean": problem.clean_value, "corrupted": problem.corrupted_value, "forwards": problem.forwards,
            "ablation": problem.ablation}


__all__ = ["AUTO_BF16_FLOPS", "Precision", "contraction_dtype", "eap", "eap_ig"]
