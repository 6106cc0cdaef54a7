"""Attribution patching: a first-order (gradient) estimate of every patch of a sweep in two passes.

Patching site ``s`` replaces the base activation ``a`` by the source activation ``a'``; to first order the
metric moves by ``grad_a(metric) · (a' - a)`` restricted to the site (Nanda, "Attribution patching";
Syed et al.). So one base forward + backward (for the gradients) and one source forward (for ``a'``) give
an estimate for *all* sites of all layers at once. For denoising the base is the corrupted run and the
source the clean one; for noising, the base is the clean run (one clean forward+backward) and the source
the corrupted run. The estimate is exact when the metric is linear in the patched activation (e.g. the
last layer's head outputs in a model without a final norm) and degrades where attention or norms saturate,
so ``compare_with_exact`` reports its correlation with exact patching.

Results are ``SweepResult`` objects with ``values = base metric + estimated change``, directly comparable
with ``patch_sweep``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import ConfigError
from mechscope.hooks.names import act_name
from mechscope.interventions.patching import (
    ALIASES,
    MetricFn,
    Readout,
    check_pair,
    check_sites,
    patch_sweep,
    run_metric,
    site_axis,
    sweep_kind,
)
from mechscope.interventions.result import SweepResult, correlation


def _select_readout(logits: Tensor, readout: Readout) -> Tensor:
    """[B pos V] -> [B V] at the answer positions."""
    if isinstance(readout, Tensor):
        return logits[torch.arange(logits.shape[0]), readout.to(logits.device)]
    return logits[:, readout]


def activations_and_grads(model: Any, tokens: Tensor, metric: MetricFn, hooks: Sequence[str],
                          readout: Readout = -1) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Activations at ``hooks`` and the gradient of the mean metric w.r.t. each (no parameter .grad touched)."""
    store: dict[str, Tensor] = {}

    def save(x: Tensor, hook: Any) -> Tensor:
        if not x.requires_grad:  # frozen parameters: start the graph here (nothing upstream to cut)
            x = x.detach().requires_grad_(True)
        store[hook.name] = x
        return x

    with torch.enable_grad(), model.hooks(fwd=[(h, save) for h in hooks]):
        logits = model(tokens)
        value = metric(_select_readout(logits, readout)).mean()
    grads = torch.autograd.grad(value, [store[h] for h in hooks], allow_unused=True)
    acts = {h: store[h].detach() for h in hooks}
    return acts, {h: (g if g is not None else torch.zeros_like(acts[h])) for h, g in zip(hooks, grads)}


def attribution_sweep(model: Any, clean: Tensor, corrupted: Tensor, metric: MetricFn, sweep: str = "resid_pre",
                      *, direction: str = "denoise", layers: Sequence[int] | None = None,
                      positions: Sequence[int] | None = None, readout: Readout = -1,
                      pos_labels: Sequence[str] | None = None) -> SweepResult:
    """Gradient estimate of ``patch_sweep`` with the same arguments and result layout (see module docstring)."""
    check_pair(clean, corrupted)
    if direction not in ("denoise", "noise"):
        raise ConfigError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    kind = sweep_kind(sweep)
    base, src = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
    layers, positions, readout = check_sites(model, base, layers, positions, readout)
    hooks = [act_name(kind.short, layer) for layer in layers]
    with torch.inference_mode():
        _, src_cache = model.run_with_cache(src, names=hooks)
    acts, grads = activations_and_grads(model, base, metric, hooks, readout)
    per_layer = []
    for hook in hooks:
        prod = grads[hook] * (src_cache[hook] - acts[hook])
        keep = [site_axis(hook, a) for a in kind.site_axes]
        # the gradient is of the prompt-mean metric, so summing over prompts gives the mean change
        summed = prod.sum(dim=[d for d in range(1, prod.dim()) if d not in keep]).sum(0)  # [*site dims]
        if "pos" in kind.site_axes:
            summed = summed.index_select(kind.site_axes.index("pos"), torch.tensor(positions))
        per_layer.append(summed)
    base_value = run_metric(model, base, metric, readout)
    values = torch.stack(per_layer).detach() + base_value
    labels = {"layer": [str(x) for x in layers]}
    for a, size in zip(kind.site_axes, values.shape[1:]):
        if a == "pos":
            labels[a] = [pos_labels[i] for i in positions] if pos_labels is not None else [str(i) for i in positions]
        else:
            labels[a] = [str(h) for h in range(size)]
    other = run_metric(model, src, metric, readout)
    clean_v, corr_v = (other, base_value) if direction == "denoise" else (base_value, other)
    return SweepResult(values=values, axes=("layer", *kind.site_axes), labels=labels,
                       sweep=ALIASES.get(sweep, sweep), direction=direction, metric=getattr(metric, "name", "metric"),
                       clean=clean_v, corrupted=corr_v, method="attribution")


def compare_with_exact(model: Any, clean: Tensor, corrupted: Tensor, metric: MetricFn,
                       sweeps: Sequence[str] = ("resid_pre", "attn_out", "mlp_out", "z"), **kwargs: Any
                       ) -> dict[str, dict[str, Any]]:
    """Per sweep: Pearson correlation of attribution vs exact patching, plus both results."""
    out: dict[str, dict[str, Any]] = {}
    for s in sweeps:
        exact = patch_sweep(model, clean, corrupted, metric, s, **kwargs)
        attr = attribution_sweep(model, clean, corrupted, metric, s,
                                 **{k: v for k, v in kwargs.items() if k != "memory_mb"})
        out[s] = {"correlation": correlation(exact, attr), "exact": exact, "attribution": attr}
    return out


__all__ = ["activations_and_grads", "attribution_sweep", "compare_with_exact"]
