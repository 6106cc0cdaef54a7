"""Path patching: the effect of a sender head on the metric *through chosen receivers only*.

Activation patching a head measures its total effect, through every later path. Path patching (Wang et
al., "Interpretability in the Wild", Goldowsky-Dill et al.) isolates one path, e.g. "S-inhibition heads →
queries of the name movers":

1. run the base input with every attention head's output ``hook_z`` *frozen* to its base value, except the
   sender, which takes its value from the source input (MLPs recompute, or are frozen with
   ``freeze_mlps=True``); record the receivers' inputs (e.g. ``blocks.9.hook_q_input`` of chosen heads);
2. run the base input again, patching only the receivers' recorded inputs; measure the metric.

Because everything else is frozen in step 1, the receivers see the sender's change only along the direct
residual path. ``blocks.{L-1}.hook_resid_post`` as the receiver measures the sender's *direct* effect on
the logits. Both steps are batched over senders: copy ``v`` of the base batch carries sender ``v``.

With post-sublayer norms (Gemma 2/3, ``norm.post_sublayer``) step 1 recomputes ``ln1_post`` on the patched
sum of heads, so a patched sender also rescales the frozen heads of its layer: the receivers see the
sender's change *and* that rescaling (a valid intervention on the real model, but not the sender's share
alone; ``frozen_norm.head_contributions`` gives that share at a frozen scale).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.cache.budget import check_bytes
from mechscope.errors import ConfigError
from mechscope.hooks.names import act_name
from mechscope.interventions.apply import intervene
from mechscope.interventions.patching import MetricFn, Readout, check_pair, readout_logits, run_metric
from mechscope.interventions.result import SweepResult
from mechscope.interventions.spec import Index, Patch


@dataclass(frozen=True, kw_only=True, eq=False)
class Receiver:
    """Where the sender's effect is allowed to enter: a hook, optionally some heads / positions of it."""

    hook: str
    """Full hook name, e.g. ``blocks.9.hook_q_input`` (queries of layer 9) or the last ``hook_resid_post``."""
    heads: Index = None
    """Heads of a per-head hook (None = all)."""
    positions: Index = None
    """Positions (None = all)."""

    def __post_init__(self) -> None:
        if not isinstance(self.hook, str) or not self.hook.startswith("blocks."):
            raise ConfigError(f"Receiver.hook must be a block hook name like 'blocks.9.hook_q_input', got {self.hook!r}")

    @property
    def layer(self) -> int:
        """Block index of the receiver."""
        return int(self.hook.split(".")[1])


def _freeze_hook(base: Tensor, src: Tensor, v: Tensor, h: Tensor, n: int) -> Any:
    """z hook for ``n`` copies: every head takes ``base`` [B pos H e]; copy ``v[i]`` head ``h[i]`` takes ``src``."""
    frozen = base.unsqueeze(0).repeat(n, 1, 1, 1, 1)  # [n B pos H e]
    if v.numel():
        frozen[v, :, :, h] = src[:, :, h].permute(2, 0, 1, 3)

    def fn(x: Tensor, hook: Any) -> Tensor:
        return frozen.reshape(x.shape).to(x.dtype)

    return fn


def _mlp_hook(base: Tensor, n: int) -> Any:
    rep = base.repeat(n, 1, 1)

    def fn(x: Tensor, hook: Any) -> Tensor:
        return rep.to(x.dtype)

    return fn


def path_patch(model: Any, clean: Tensor, corrupted: Tensor, metric: MetricFn, receivers: Sequence[Receiver], *,
               senders: Sequence[tuple[int, int]] | None = None, direction: str = "denoise",
               freeze_mlps: bool = False, readout: Readout = -1, memory_mb: float = 256.0) -> SweepResult:
    """Metric after patching each sender head's path into ``receivers`` (see the module docstring).

    Args:
        senders: (layer, head) pairs; None = every head in layers before the last receiver's layer
            (and that layer itself when a receiver reads the block output, ``hook_resid_post``).
    Returns:
        ``SweepResult`` with axes ``("layer", "head")`` over all heads of the sender layers (heads not in
        ``senders`` are NaN), method ``path``.
    """
    check_pair(clean, corrupted)
    if not receivers:
        raise ConfigError("path_patch needs at least one Receiver")
    if direction not in ("denoise", "noise"):
        raise ConfigError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    base, src = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
    n_heads = model.cfg.n_heads
    top = max(r.layer + (1 if r.hook.endswith("resid_post") else 0) for r in receivers)
    if senders is None:
        senders = [(layer, h) for layer in range(top) for h in range(n_heads)]
    if not senders:
        raise ConfigError("no sender heads: receivers in layer 0 can only be reached from the embeddings")
    n_layers = max(s[0] for s in senders) + 1
    z_names = [act_name("z", layer) for layer in range(model.cfg.n_layers)]
    mlp_names = [act_name("mlp_out", layer) for layer in range(model.cfg.n_layers)] if freeze_mlps else []
    with torch.inference_mode():
        _, base_cache = model.run_with_cache(base, names=z_names + mlp_names)
        _, src_cache = model.run_with_cache(src, names=z_names[:n_layers])
    b = base.shape[0]
    fixed = base_cache.nbytes() + src_cache.nbytes()  # held for the whole sweep: counted against memory_mb
    row = max(1, _row_bytes(model, base.shape[1]) * b)
    per_chunk = max(1, int((memory_mb * 2**20 - fixed) // row))
    check_bytes(fixed + per_chunk * row, f"path_patch on {b} prompts x {base.shape[1]} positions",
                "Fewer senders, fewer prompts or shorter prompts fit.")
    send = torch.tensor(list(senders), dtype=torch.long).reshape(-1, 2)
    vals = []
    for lo in range(0, send.shape[0], per_chunk):
        vals.append(_path_chunk(model, base, send[lo:lo + per_chunk], base_cache, src_cache, z_names, mlp_names,
                                receivers, metric, readout))
    values = torch.full((n_layers, n_heads), float("nan"))
    values[send[:, 0], send[:, 1]] = torch.cat(vals)
    other = run_metric(model, src, metric, readout)
    base_v = run_metric(model, base, metric, readout)
    clean_v, corr_v = (other, base_v) if direction == "denoise" else (base_v, other)
    return SweepResult(values=values, axes=("layer", "head"),
                       labels={"layer": [str(i) for i in range(n_layers)], "head": [str(h) for h in range(n_heads)]},
                       sweep="path:" + ",".join(r.hook for r in receivers), direction=direction,
                       metric=getattr(metric, "name", "metric"), clean=clean_v, corrupted=corr_v, method="path",
                       extra={"senders_per_chunk": per_chunk, "fixed_bytes": fixed})


def _row_bytes(model: Any, n_pos: int) -> int:
    cfg = model.cfg
    return 4 * (n_pos * (10 * cfg.d_model + 3 * (cfg.d_mlp or 0) + 2 * cfg.n_heads * cfg.d_model) + cfg.vocab_out)


def _path_chunk(model: Any, base: Tensor, send: Tensor, base_cache: Any, src_cache: Any, z_names: list[str],
                mlp_names: list[str], receivers: Sequence[Receiver], metric: MetricFn, readout: Readout) -> Tensor:
    """Both path-patching steps for ``len(send)`` senders in one batch each -> metric means [n]."""
    n, b = send.shape[0], base.shape[0]
    rows = torch.arange(n)
    fwd: list[tuple[str, Any]] = []
    for layer, name in enumerate(z_names):
        at = send[:, 0] == layer
        src_z = src_cache[name] if name in src_cache else base_cache[name]
        fwd.append((name, _freeze_hook(base_cache[name], src_z, rows[at], send[at, 1], n)))
    fwd += [(name, _mlp_hook(base_cache[name], n)) for name in mlp_names]
    recorded: dict[str, Tensor] = {}

    def record(x: Tensor, hook: Any) -> None:
        recorded[hook.name] = x.clone()

    rep = base.repeat(n, 1)
    with torch.inference_mode():
        with model.hooks(fwd=fwd + [(r.hook, record) for r in receivers]):
            model(rep, stop_at_layer=max(r.layer for r in receivers) + 1)
        specs = [Patch(hook=r.hook, source=recorded[r.hook], heads=r.heads, positions=r.positions) for r in receivers]
        with intervene(model, specs):
            final = model(rep, stop_at_layer=model.cfg.n_layers)
        return metric(readout_logits(model, final, readout, b)).mean(-1)


__all__ = ["Receiver", "path_patch"]
