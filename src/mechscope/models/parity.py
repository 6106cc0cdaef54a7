"""Parity certificates: our numbers against the transformers implementation of the same weights.

``compare_to_hf`` runs both models on the same tokens and reports max |Δ| of the logits and of every
activation the adapter can observe in the transformers module tree (residual stream, attention and MLP
outputs, q/k/v, z, MLP hidden). Users must be able to trust that what they dissect is the real model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mechscope.models.adapters import adapter_for
from mechscope.models.adapters.base import ActivationRule
from mechscope.models.transformer import HookedTransformer


@dataclass
class ParityReport:
    """Max absolute differences against transformers (``hooks``: our hook name -> max |Δ|)."""

    dtype: str
    logits_max_abs: float
    hooks: dict[str, float] = field(default_factory=dict)
    hook_scales: dict[str, float] = field(default_factory=dict)
    """max |reference activation| per hook (activations reach ~2e4 in SmolLM2's middle layers, where float32
    rounding alone exceeds any fixed absolute bound; compare ``worst_hook_rel`` instead)."""
    logit_scale: float = 0.0
    logits: Tensor | None = field(default=None, repr=False)
    """Our logits (kept so callers need not run the model again; not part of ``to_dict``)."""
    ref_logits: Tensor | None = field(default=None, repr=False)
    """The transformers model's logits."""

    @property
    def worst_hook(self) -> tuple[str, float]:
        """The hook with the largest difference ("", 0.0 if none compared)."""
        return max(self.hooks.items(), key=lambda kv: kv[1]) if self.hooks else ("", 0.0)

    @property
    def worst_hook_rel(self) -> tuple[str, float]:
        """The hook with the largest max |Δ| / max |reference| ("", 0.0 if none compared)."""
        rel = {n: d / max(self.hook_scales.get(n, 0.0), 1e-30) for n, d in self.hooks.items()}
        return max(rel.items(), key=lambda kv: kv[1]) if rel else ("", 0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        name, worst = self.worst_hook
        rel_name, rel = self.worst_hook_rel
        return {"dtype": self.dtype, "logits_max_abs": self.logits_max_abs, "logit_scale": self.logit_scale,
                "n_hooks_compared": len(self.hooks), "worst_hook": name, "worst_hook_max_abs": worst,
                "worst_hook_rel": rel_name, "worst_hook_rel_diff": rel, "hooks": self.hooks}


def _resolve(module: Any, path: str) -> Any:
    for part in path.split("."):
        module = getattr(module, part) if not part.isdigit() else module[int(part)]
    return module


@contextmanager
def _capture(hf_model: Any, rules: list[tuple[str, ActivationRule]], store: dict[str, Tensor]) -> Iterator[None]:
    handles = []
    for name, r in rules:
        mod = _resolve(hf_model, r.module)
        if r.where == "in":
            def pre(m: Any, args: Any, kwargs: Any, _n: str = name) -> None:
                store[_n] = (args[0] if args else kwargs["hidden_states"]).detach()
            handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        else:
            def post(m: Any, args: Any, out: Any, _n: str = name) -> None:
                store[_n] = (out[0] if isinstance(out, tuple) else out).detach()
            handles.append(mod.register_forward_hook(post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def compare_to_hf(model: HookedTransformer, hf_model: Any, tokens: Tensor) -> ParityReport:
    """Run ``tokens`` through both models; report max |Δ| of logits and every shared activation."""
    adapter = adapter_for(hf_model.config.model_type)
    cfg = model.cfg
    rules = [(r.ours.replace("{L}", str(layer)), ActivationRule(r.ours, r.module.replace("{L}", str(layer)),
                                                                 r.where, r.view))
             for layer in range(cfg.n_layers) for r in adapter.activation_rules]
    rules = [(n, r) for n, r in rules if n in model.hook_dict]
    theirs: dict[str, Tensor] = {}
    with torch.no_grad(), _capture(hf_model, rules, theirs):
        hf_logits = hf_model(tokens).logits
    logits, cache = model.run_with_cache(tokens, names=[n for n, _ in rules])
    report = ParityReport(dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
                          logits_max_abs=float((logits.float() - hf_logits.float()).abs().max()),
                          logit_scale=float(hf_logits.float().abs().max()), logits=logits, ref_logits=hf_logits)
    for name, r in rules:
        if name not in theirs:
            continue
        ours = cache[name]
        other = theirs[name].reshape(ours.shape) if r.view != "flat" else theirs[name]
        report.hooks[name] = float((ours.float() - other.float()).abs().max())
        report.hook_scales[name] = float(other.float().abs().max())
    return report
