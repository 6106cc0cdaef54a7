"""Batched activation patching: every site of a sweep is one row block of a single batched forward.

Activation patching (Heimersheim & Nanda) runs the model on one input while overwriting one activation
with its value from another input. *Denoising* patches clean activations into the corrupted run (which
sites suffice to restore the behaviour?); *noising* patches corrupted activations into the clean run (which
sites are necessary?). A sweep repeats this for every site (layer × position, layer × head, ...).

The slow way is one forward per site. Here the variants of a sweep go into the batch dimension: for the
sites of layer ``l`` the base run is repeated ``n`` times (``n`` sites × ``B`` prompts rows) and ONE hook on
``blocks.l.<hook>`` writes each copy's own site with index tensors. Two more savings are exact:

* everything before layer ``l`` is identical in every copy, so the copies start from the base run's cached
  ``resid_pre`` of layer ``l`` and only blocks ``l..L-1`` run (``forward_from``);
* the metric reads only the answer position, so the final norm and the unembedding run on that position only.

Chunks of rows respect a memory budget. Results are ``SweepResult`` tensors with named axes and labels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.cache.budget import check_bytes, hook_numel
from mechscope.errors import ConfigError, ShapeError
from mechscope.hooks.names import act_name, registered_axes
from mechscope.interventions.result import SweepResult
from mechscope.models.components.attention import KVCache

Readout = int | Tensor
MetricFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class SweepKind:
    """A sweep: the hook shorthand and which axes of the activation a site indexes."""

    short: str
    """Activation shorthand for ``act_name`` (``resid_pre``, ``z``...)."""
    site_axes: tuple[str, ...]
    """Site axes among ``pos`` and ``head``."""


SWEEPS: dict[str, SweepKind] = {
    "resid_pre": SweepKind("resid_pre", ("pos",)),
    "resid_mid": SweepKind("resid_mid", ("pos",)),
    "resid_post": SweepKind("resid_post", ("pos",)),
    "attn_out": SweepKind("attn_out", ("pos",)),
    "mlp_out": SweepKind("mlp_out", ("pos",)),
    "z": SweepKind("z", ("head",)),
    "z_by_pos": SweepKind("z", ("pos", "head")),
    "q": SweepKind("q", ("head",)),
    "k": SweepKind("k", ("head",)),
    "v": SweepKind("v", ("head",)),
    "pattern": SweepKind("pattern", ("head",)),
}
ALIASES = {"heads": "z", "heads_by_pos": "z_by_pos", "resid": "resid_pre"}


def sweep_kind(sweep: str) -> SweepKind:
    """Look up a sweep by name (aliases: ``heads`` = ``z``, ``heads_by_pos``, ``resid`` = ``resid_pre``)."""
    name = ALIASES.get(sweep, sweep)
    if name not in SWEEPS:
        raise ConfigError(f"unknown sweep {sweep!r}; allowed: {sorted(SWEEPS) + sorted(ALIASES)}")
    return SWEEPS[name]


def site_axis(hook: str, axis: str) -> int:
    """Index of the ``pos`` / ``head`` axis in a hook's activation (pos = query pos for patterns)."""
    names = ("pos", "query_pos") if axis == "pos" else ("n_heads", "n_kv_heads")
    for i, a in enumerate(registered_axes(hook)):
        if a in names:
            return i
    raise ConfigError(f"hook {hook!r} has no {axis} axis")


def check_pair(clean: Tensor, corrupted: Tensor) -> None:
    """Clean and corrupted token batches must be int [batch pos] of identical shape."""
    for name, t in (("clean", clean), ("corrupted", corrupted)):
        if t.dim() != 2:
            raise ShapeError(f"{name} tokens must be [batch pos], got shape {tuple(t.shape)}")
    if clean.shape != corrupted.shape:
        raise ShapeError(f"clean tokens {tuple(clean.shape)} and corrupted tokens {tuple(corrupted.shape)} must "
                         "have the same shape: patching aligns positions, so choose a corruption with the same "
                         "number of tokens (e.g. swap single-token names)")


def _ints(values: Any, what: str) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, range, Tensor)):
        raise ConfigError(f"{what} must be a list of ints, got {values!r}")
    out = values.tolist() if isinstance(values, Tensor) else list(values)
    bad = [v for v in out if not isinstance(v, int) or isinstance(v, bool)]
    if bad:
        raise ConfigError(f"{what} must be ints, got {bad[:5]} (a boolean mask is not accepted here; pass "
                          "the indices, e.g. torch.nonzero(mask).flatten().tolist())")
    return out


def check_sites(model: Any, tokens: Tensor, layers: Sequence[int] | None, positions: Sequence[int] | None,
                readout: Readout) -> tuple[list[int], list[int], Readout]:
    """Validated layers and positions (negative positions counted from the end, as normalised indices)
    and readout (an int in [-pos, pos), or [B] ints) for a sweep over ``tokens`` [B pos]."""
    n_layers, (b, p) = model.cfg.n_layers, tokens.shape
    layer_list = list(range(n_layers)) if layers is None else _ints(layers, "layers")
    if not layer_list:
        raise ConfigError("layers is empty: give at least one layer, or None for all")
    bad = [x for x in layer_list if not 0 <= x < n_layers]
    if bad:
        raise ConfigError(f"layers {bad} out of range: the model has layers 0..{n_layers - 1}")
    pos_list = list(range(p)) if positions is None else _ints(positions, "positions")
    if not pos_list:
        raise ConfigError("positions is empty: give at least one position, or None for all")
    bad = [x for x in pos_list if not -p <= x < p]
    if bad:
        raise ConfigError(f"positions {bad} out of range for sequences of {p} tokens (allowed -{p}..{p - 1})")
    pos_list = [x % p for x in pos_list]
    if len(set(pos_list)) != len(pos_list):
        raise ConfigError(f"positions repeat a position (after counting negatives from the end): {pos_list}")
    if isinstance(readout, Tensor):
        if readout.is_floating_point() or readout.dtype == torch.bool or readout.shape != (b,):
            raise ConfigError(f"readout tensor must hold one int position per prompt, shape ({b},), got "
                              f"dtype {readout.dtype} shape {tuple(readout.shape)}")
        if readout.numel() and (int(readout.min()) < -p or int(readout.max()) >= p):
            raise ConfigError(f"readout positions {readout.tolist()} out of range for {p} tokens (-{p}..{p - 1})")
        readout = readout.long() % p
    elif isinstance(readout, int) and not isinstance(readout, bool):
        if not -p <= readout < p:
            raise ConfigError(f"readout={readout} out of range for sequences of {p} tokens (allowed -{p}..{p - 1})")
    else:
        raise ConfigError(f"readout must be an int position or a [B] int tensor, got {readout!r}")
    return layer_list, pos_list, readout


# -- running part of a model --------------------------------------------------------------------------
def forward_from(model: Any, resid: Tensor, layer: int, past: KVCache | None = None) -> Tensor:
    """Run blocks ``layer..L-1`` on ``resid`` [batch pos d_model] -> final resid (see ``model.run_blocks``).

    Without ``past`` the positions start at 0; with ``past`` (keys/values of the earlier positions for every
    layer from ``layer`` on) ``resid`` holds the later positions only.
    """
    return model.run_blocks(resid, layer, past_kv=past)


def base_kv(model: Any, tokens: Tensor) -> KVCache:
    """Keys/values of every layer for ``tokens`` (to resume a run from a later position)."""
    kv = KVCache(model.cfg.n_layers)
    with torch.inference_mode():
        model(tokens, past_kv=kv)
    return kv


def _prefix_cache(kv: KVCache, layer: int, p_lo: int, n: int) -> KVCache:
    """``n`` copies of the first ``p_lo`` positions' keys/values of layers ``layer..``."""
    out = KVCache(len(kv.keys))
    for j in range(layer, len(kv.keys)):
        out.keys[j] = kv.keys[j][:, :, :p_lo].repeat(n, 1, 1, 1)  # type: ignore[index]
        out.values[j] = kv.values[j][:, :, :p_lo].repeat(n, 1, 1, 1)  # type: ignore[index]
    return out


def readout_logits(model: Any, final_resid: Tensor, readout: Readout, n_prompts: int) -> Tensor:
    """Final resid [n*B pos d] -> logits at each prompt's answer position, [n B d_vocab_out]."""
    nb, p, d = final_resid.shape
    x = final_resid.view(nb // n_prompts, n_prompts, p, d)
    if isinstance(readout, Tensor):
        x = x[:, torch.arange(n_prompts), readout.to(x.device)]
    else:
        x = x[:, :, readout]
    return model.unembed(model.ln_final(x))


def run_metric(model: Any, tokens: Tensor, metric: MetricFn, readout: Readout = -1) -> float:
    """Mean metric of a plain run (the same readout path the sweeps use)."""
    with torch.inference_mode():
        final = model(tokens, stop_at_layer=model.cfg.n_layers)
        return float(metric(readout_logits(model, final, readout, tokens.shape[0])[0]).mean())


# -- sites ---------------------------------------------------------------------------------------------
def site_grid(kind: SweepKind, positions: Sequence[int], n_heads: int) -> Tensor:
    """All sites of one layer as rows of indices [n_sites len(site_axes)], pos-major."""
    ranges = [list(positions) if a == "pos" else list(range(n_heads)) for a in kind.site_axes]
    return torch.tensor(list(itertools.product(*ranges)), dtype=torch.long).reshape(-1, len(ranges))


def site_patch_hook(axes: Sequence[int], sites: Tensor, source: Tensor) -> Callable[[Tensor, Any], Tensor]:
    """Hook for a batch of ``n = len(sites)`` copies: copy ``v`` gets ``source`` at its own site.

    ``axes``: activation axes (excluding nothing; batch is 0) that the site columns index, adjacent and
    increasing. ``source`` [B ...] is the other run's activation; the live activation is [n*B ...].
    """
    n, b = sites.shape[0], source.shape[0]
    v = torch.arange(n)
    src_idx: list[Any] = [slice(None)] * source.dim()
    for ax, col in zip(axes, sites.T):
        src_idx[ax] = col
    values = source[tuple(src_idx)].movedim(axes[0], 0)  # [n B rest]

    def fn(x: Tensor, hook: Any) -> Tensor:
        xv = x.reshape(n, b, *x.shape[1:]).clone()
        idx: list[Any] = [v, slice(None)] + [slice(None)] * (x.dim() - 1)
        for ax, col in zip(axes, sites.T):
            idx[ax + 1] = col
        xv[tuple(idx)] = values.to(x.dtype)
        return xv.reshape(x.shape)

    return fn


def row_bytes(model: Any, n_pos: int, kind: SweepKind) -> int:
    """Live activation bytes of one patched row (a rough upper estimate)."""
    cfg = model.cfg
    per_pos = 8 * cfg.d_model + 3 * (cfg.d_mlp or 0) + 4 * cfg.n_heads * cfg.d_head
    per_pos += 3 * cfg.n_heads * n_pos if kind.short == "pattern" else 0
    return 4 * (n_pos * per_pos + cfg.vocab_out)


def rows_per_chunk(model: Any, n_pos: int, kind: SweepKind, memory_mb: float, fixed_bytes: int = 0) -> int:
    """Rows per forward so that the fixed costs plus live activations stay within ``memory_mb``."""
    return max(1, int((memory_mb * 2**20 - fixed_bytes) // row_bytes(model, n_pos, kind)))


def _tensor_bytes(src_cache: Any, base_cache: Any, kv: KVCache | None) -> int:
    """Bytes held for the whole sweep: the two caches and the base run's keys/values (the fixed costs)."""
    total = src_cache.nbytes() + base_cache.nbytes()
    if kv is not None:
        total += sum(t.numel() * t.element_size() for t in [*kv.keys, *kv.values] if t is not None)
    return total


# -- the sweep -----------------------------------------------------------------------------------------
def patch_sweep(model: Any, clean: Tensor, corrupted: Tensor, metric: MetricFn, sweep: str = "resid_pre", *,
                direction: str = "denoise", layers: Sequence[int] | None = None,
                positions: Sequence[int] | None = None, readout: Readout = -1,
                pos_labels: Sequence[str] | None = None, memory_mb: float = 256.0,
                skip_prefix: bool = True) -> SweepResult:
    """Exact activation patching for every site of ``sweep``, batched; see the module docstring.

    Args:
        clean, corrupted: token ids [B pos] of the same shape.
        metric: answer-position logits [..., B, d_vocab] -> [..., B] (see ``mechscope.metrics``).
        sweep: ``resid_pre|resid_mid|resid_post|attn_out|mlp_out`` (layer × pos), ``z`` (layer × head,
            all positions), ``z_by_pos`` (layer × pos × head), ``q|k|v|pattern`` (layer × head).
        direction: ``denoise`` patches clean activations into the corrupted run; ``noise`` the reverse.
        readout: answer position (int, or [B] per prompt).
        skip_prefix: for position sweeps, run only positions >= the chunk's first patched position, reusing
            the base run's keys/values before it (same numbers up to float re-association; False runs every
            position, bit-identical to one plain forward per site when one site fits a chunk).
    Returns:
        ``SweepResult`` with axes ``("layer", *site_axes)``; ``values`` are metric means over prompts.
    """
    check_pair(clean, corrupted)
    if direction not in ("denoise", "noise"):
        raise ConfigError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    kind = sweep_kind(sweep)
    base, src = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
    b, p = base.shape
    layers, positions, readout = check_sites(model, base, layers, positions, readout)
    hooks = [act_name(kind.short, layer) for layer in layers]
    with torch.inference_mode():
        _, src_cache = model.run_with_cache(src, names=hooks)
        _, base_cache = model.run_with_cache(base, names=[act_name("resid_pre", layer) for layer in layers])
    kv = base_kv(model, base) if skip_prefix and "pos" in kind.site_axes and isinstance(readout, int) else None
    fixed = _tensor_bytes(src_cache, base_cache, kv)  # held for the whole sweep: counted against memory_mb
    rows = rows_per_chunk(model, p, kind, memory_mb, fixed)
    check_bytes(fixed + rows * row_bytes(model, p, kind), f"patch_sweep {sweep!r} on {b} prompts x {p} positions",
                "Fewer layers (layers=...), fewer prompts or shorter prompts fit.")
    out, site_shape = [], [len(positions)]
    for layer, hook in zip(layers, hooks):
        source = src_cache[hook]
        axes = [site_axis(hook, a) for a in kind.site_axes]
        n_heads = source.shape[site_axis(hook, "head")] if "head" in kind.site_axes else 1
        site_shape = [len(positions) if a == "pos" else n_heads for a in kind.site_axes]
        sites = site_grid(kind, positions, n_heads)
        out.append(_layer_values(model, layer, hook, axes, sites, source, base_cache[act_name("resid_pre", layer)],
                                 metric, readout, max(1, rows // b), kv))
    labels = {"layer": [str(x) for x in layers]}
    for a, size in zip(kind.site_axes, site_shape):
        if a == "pos":
            labels[a] = [pos_labels[i] for i in positions] if pos_labels is not None else [str(i) for i in positions]
        else:
            labels[a] = [str(h) for h in range(size)]
    shape = [len(layers), *site_shape]
    return SweepResult(values=torch.stack(out).reshape(shape), axes=("layer", *kind.site_axes), labels=labels,
                       sweep=ALIASES.get(sweep, sweep), direction=direction, metric=getattr(metric, "name", "metric"),
                       clean=run_metric(model, clean, metric, readout),
                       corrupted=run_metric(model, corrupted, metric, readout),
                       extra={"rows_per_chunk": rows, "fixed_bytes": fixed})


def _layer_values(model: Any, layer: int, hook: str, axes: list[int], sites: Tensor, source: Tensor,
                  start_resid: Tensor, metric: MetricFn, readout: Readout, per_chunk: int,
                  kv: KVCache | None = None) -> Tensor:
    """Metric (mean over prompts) for every site of one layer, ``per_chunk`` sites per forward.

    With ``kv`` (position sweeps, sites sorted by position), a chunk whose first patched position is
    ``p_lo`` runs positions ``p_lo..`` only: earlier positions are unchanged in every copy.
    """
    b, n_pos = source.shape[0], start_resid.shape[1]
    if kv is not None:  # at least 4 position groups, so later groups skip most of the prefix
        per_chunk = max(1, min(per_chunk, math.ceil(sites.shape[0] / 4)))
    vals = []
    with torch.inference_mode():
        for lo in range(0, sites.shape[0], per_chunk):
            chunk = sites[lo:lo + per_chunk]
            n = chunk.shape[0]
            p_lo, src, past, rd = 0, source, None, readout
            if kv is not None:
                p_lo = min(int(chunk[:, 0].min()), int(readout) % n_pos)  # type: ignore[arg-type]
                chunk = chunk.clone()
                chunk[:, 0] -= p_lo
                src = source.narrow(axes[0], p_lo, n_pos - p_lo)
                past = _prefix_cache(kv, layer, p_lo, n) if p_lo else None
                rd = int(readout) % n_pos - p_lo  # type: ignore[arg-type]
            fn = site_patch_hook(axes, chunk, src)
            resid = start_resid[:, p_lo:].repeat(n, 1, 1)
            with model.hooks(fwd=[(hook, fn)]):
                final = forward_from(model, resid, layer, past)
            vals.append(metric(readout_logits(model, final, rd, b)).mean(-1))
    return torch.cat(vals)


def estimate_chunks(model: Any, n_prompts: int, n_pos: int, sweep: str, memory_mb: float = 256.0) -> int:
    """How many forwards a full sweep takes under a memory budget (for progress reports)."""
    kind = sweep_kind(sweep)
    per_layer = math.prod(n_pos if a == "pos" else model.cfg.n_heads for a in kind.site_axes)
    cfg = model.cfg
    fixed = 4 * n_prompts * n_pos * cfg.n_layers * (cfg.d_model + (hook_numel(model, act_name(kind.short, 0), 1, n_pos)
                                                                   or 0) // n_pos)
    per_chunk = max(1, rows_per_chunk(model, n_pos, kind, memory_mb, fixed) // n_prompts)
    return model.cfg.n_layers * math.ceil(per_layer / per_chunk)


__all__ = ["SWEEPS", "SweepKind", "check_pair", "check_sites", "estimate_chunks", "forward_from", "patch_sweep",
           "readout_logits", "run_metric", "site_grid", "site_patch_hook", "sweep_kind"]
