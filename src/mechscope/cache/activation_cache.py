"""``ActivationCache``: a read-only ``Mapping[str, Tensor]`` from hook names to activations.

It holds tensors, plus at most a *weak* reference to the model that made it (``run_with_cache`` sets it),
so TransformerLens's convenience methods (``cache.decompose_resid()``, ``cache.logit_attrs(...)``...;
``cache/methods.py``) work without the cache owning a model; the analyses themselves are the free
functions in ``cache/analysis.py``. Keys are full hook names; ``cache["z", 3]`` is shorthand for
``cache[act_name("z", 3)]``; gradients are stored as ``"<name>_grad"``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from typing import Any, Union

import torch
from torch import Tensor

from mechscope.cache.methods import CacheAnalysisMethods
from mechscope.errors import unknown_hook
from mechscope.hooks.names import act_name

Key = Union[str, tuple]


class ActivationCache(CacheAnalysisMethods, Mapping[str, Tensor]):
    """See the module docstring."""

    def __init__(self, data: Mapping[str, Tensor], model: Any = None) -> None:
        self._data = dict(data)
        self._model_ref = weakref.ref(model) if model is not None else None

    def _key(self, key: Key) -> str:
        if isinstance(key, tuple):
            name = act_name(*key)
        else:
            name = key
        if name not in self._data:
            if name.endswith("_grad") and name[:-5] in self._data:
                raise KeyError(f"{name!r} is not cached: pass grad_of=... to run_with_cache to store gradients")
            raise unknown_hook(name, self._data)
        return name

    def __getitem__(self, key: Key) -> Tensor:  # type: ignore[override]
        return self._data[self._key(key)]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, tuple):
            try:
                key = act_name(*key)
            except KeyError:
                return False
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self)} entries: {', '.join(list(self._data)[:4])}{', ...' if len(self) > 4 else ''})"

    def _repr_html_(self, max_rows: int = 40) -> str:
        """Inline rendering in Jupyter: one row per cached activation (name, shape, dtype)."""
        from mechscope.viz.report import esc, table_html

        rows = [{"name": k, "shape": tuple(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
                for k, v in list(self._data.items())[:max_rows]]
        more = len(self) - len(rows)
        return (f"<p><b>ActivationCache</b>: {len(self)} activations, {self.nbytes() / 2**20:.2f} MiB</p>"
                + table_html(rows) + (f"<p>… and {more} more: {esc(', '.join(list(self._data)[max_rows:][:5]))}"
                                      + (", …" if more > 5 else "") + "</p>" if more > 0 else ""))

    def to(self, device: str | torch.device) -> ActivationCache:
        """A copy with every tensor moved to ``device``."""
        return ActivationCache({k: v.to(device) for k, v in self._data.items()},
                               self._model_ref() if self._model_ref is not None else None)

    def nbytes(self) -> int:
        """Total bytes held."""
        return sum(v.numel() * v.element_size() for v in self._data.values())
