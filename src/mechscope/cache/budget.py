"""Memory budget: estimate what a cache will hold from the registered hook shapes, refuse beyond a budget.

The budget is, in order: the call's ``max_bytes`` argument, the ``MECHSCOPE_MEMORY_BUDGET`` environment
variable (``"8GB"``, ``"512MiB"``, ``"40%"`` of available RAM, a byte count, or ``"off"``), else
``DEFAULT_FRACTION`` of the RAM available when the call starts (``MemAvailable``). Estimates come from
``hooks.names.HOOK_SHAPES`` (the same table ``mechscope info`` prints) times the element size, so they
are exact for the cache itself; autograd graphs and transient buffers come on top.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from mechscope.errors import ConfigError, HookNameError, MemoryBudgetError

ENV = "MECHSCOPE_MEMORY_BUDGET"
DEFAULT_FRACTION = 0.5
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}

BudgetSpec = int | float | str | None


def available_bytes() -> int:
    """RAM available to a new allocation now (Linux ``MemAvailable``; else free physical pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown platform: no practical limit


def parse_budget(spec: BudgetSpec) -> int | None:
    """Bytes for a budget spec (see the module docstring); None means unlimited."""
    if spec is None:
        return None
    if isinstance(spec, bool):
        raise ConfigError(f"a memory budget must be a size like '8GB', '40%', bytes or 'off', got {spec!r}")
    if isinstance(spec, (int, float)):
        if spec <= 0:
            raise ConfigError(f"a memory budget must be positive, got {spec}")
        return int(spec)
    s = str(spec).strip().lower().replace(" ", "")
    if s in ("off", "none", "unlimited", "inf"):
        return None
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)(%|[kmgt]i?b|b)?", s)
    if m is None or float(m.group(1)) <= 0:
        raise ConfigError(f"cannot read memory budget {spec!r}; use e.g. '8GB', '512MiB', '40%', a byte count, "
                          "or 'off'")
    value, unit = float(m.group(1)), m.group(2) or ""
    if unit == "%":
        return int(available_bytes() * value / 100)
    return int(value * _UNITS[unit])


def budget_bytes(max_bytes: BudgetSpec = None) -> tuple[int | None, str]:
    """(budget in bytes or None for unlimited, where it came from)."""
    if max_bytes is not None:
        return parse_budget(max_bytes), f"max_bytes={max_bytes!r}"
    env = os.environ.get(ENV)
    if env:
        return parse_budget(env), f"{ENV}={env}"
    return int(available_bytes() * DEFAULT_FRACTION), f"{DEFAULT_FRACTION:.0%} of the RAM available now"


def fmt_bytes(n: float) -> str:
    """``1.5 GiB``-style size."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def hook_numel(model: Any, name: str, batch: int, pos: int, key_pos: int | None = None) -> int | None:
    """Elements a hook's activation holds for ``[batch, pos]`` input (None: no registered shape)."""
    from mechscope.hooks.names import registered_axes, resolve_shape

    try:
        axes = registered_axes(name)
    except HookNameError:
        return None
    sizes = model.cfg.dim_sizes(batch=batch, pos=pos)
    if key_pos is not None:
        sizes["key_pos"] = key_pos
    n = 1
    for s in resolve_shape(axes, sizes):
        n *= s
    return n


def _runs(name: str, stop_at_layer: int | None) -> bool:
    """Whether hook ``name`` fires in a forward stopped at ``stop_at_layer``."""
    if stop_at_layer is None:
        return True
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) > 2 and parts[1].isdigit():
        return int(parts[1]) < stop_at_layer
    return name in ("hook_tokens", "hook_embed", "hook_pos_embed")


def cache_bytes(model: Any, names: Sequence[str], batch: int, pos: int, *, itemsize: int = 4,
                stop_at_layer: int | None = None, with_grad: bool = False, key_pos: int | None = None) -> dict[str, int]:
    """Bytes each hook in ``names`` will hold in a cache (0 for hooks that do not fire or have no shape)."""
    out = {}
    for n in names:
        numel = hook_numel(model, n, batch, pos, key_pos) if _runs(n, stop_at_layer) else 0
        size = 8 if n == "hook_tokens" else itemsize
        out[n] = (numel or 0) * size * (2 if with_grad and n != "hook_tokens" else 1)
    return out


def check_cache(model: Any, names: Sequence[str], tokens: Any, *, max_bytes: BudgetSpec = None,
                stop_at_layer: int | None = None, with_grad: bool = False, past: int = 0,
                what: str = "run_with_cache") -> int:
    """Raise ``MemoryBudgetError`` if caching ``names`` for ``tokens`` exceeds the budget; returns the bytes.

    The message says what would fit: how many of the names, how many positions, which ``stop_at_layer``,
    and whether bf16 would.
    """
    cfg = getattr(model, "cfg", None)
    shape = getattr(tokens, "shape", None)
    if cfg is None or not hasattr(cfg, "dim_sizes") or shape is None or len(shape) not in (1, 2):
        return 0
    batch, pos = (1, int(shape[0])) if len(shape) == 1 else (int(shape[0]), int(shape[1]))
    itemsize = _itemsize(model)
    per = cache_bytes(model, names, batch, pos, itemsize=itemsize, stop_at_layer=stop_at_layer,
                      with_grad=with_grad, key_pos=pos + past)
    need = sum(per.values())
    budget, source = budget_bytes(max_bytes)
    if budget is None or need <= budget:
        return need
    fits = []
    sizes = sorted(v for v in per.values() if v)
    k = 0
    while k < len(sizes) and sum(sizes[: k + 1]) <= budget:
        k += 1
    fits.append(f"{k} of the {len(sizes)} hook names")
    lo, hi = 0, pos
    while lo < hi:  # longest input that fits (patterns grow with pos squared)
        mid = (lo + hi + 1) // 2
        got = sum(cache_bytes(model, names, batch, mid, itemsize=itemsize, stop_at_layer=stop_at_layer,
                              with_grad=with_grad, key_pos=mid + past).values())
        lo, hi = (mid, hi) if got <= budget else (lo, mid - 1)
    fits.append(f"inputs of at most {lo} positions (batch {batch})" if lo else "no input length at this batch size")
    layers = getattr(cfg, "n_layers", 0)
    best = None
    for layer in range(layers, 0, -1):
        if sum(cache_bytes(model, names, batch, pos, itemsize=itemsize, stop_at_layer=layer,
                           with_grad=with_grad, key_pos=pos + past).values()) <= budget:
            best = layer
            break
    if best is not None and (stop_at_layer is None or best < stop_at_layer):
        fits.append(f"stop_at_layer={best}")
    if itemsize == 4 and need // 2 <= budget:
        fits.append("the model in bf16 (model.to(torch.bfloat16) halves it)")
    biggest = max(per, key=lambda n: per[n])
    raise MemoryBudgetError(
        f"{what} would hold {fmt_bytes(need)} for {len(sizes)} hook points on input [{batch}, {pos}] (largest: "
        f"{biggest}, {fmt_bytes(per[biggest])}), over the memory budget of {fmt_bytes(budget)} ({source}). "
        f"What fits: {'; '.join(fits)}. Or raise the budget with max_bytes='16GB' or {ENV}=16GB ('off' disables it).")


def check_bytes(need: int, what: str, advice: str, max_bytes: BudgetSpec = None) -> None:
    """Raise ``MemoryBudgetError`` if ``need`` bytes exceed the budget; ``advice`` says what fits."""
    budget, source = budget_bytes(max_bytes)
    if budget is not None and need > budget:
        raise MemoryBudgetError(f"{what} would hold {fmt_bytes(need)}, over the memory budget of {fmt_bytes(budget)} "
                                f"({source}). {advice} Or raise the budget with {ENV}=16GB ('off' disables it).")


def _itemsize(model: Any) -> int:
    try:
        return int(next(model.parameters()).element_size())
    except (StopIteration, AttributeError, TypeError):
        return 4


__all__ = ["DEFAULT_FRACTION", "ENV", "available_bytes", "budget_bytes", "cache_bytes", "check_bytes", "check_cache",
           "fmt_bytes", "hook_numel", "parse_budget"]
