"""TransformerLens's ``ActivationCache`` methods, delegating to the free functions of ``cache/analysis.py``.

The cache stays a mapping of tensors: it holds its model only through a *weak* reference, set when
``model.run_with_cache`` made it, so a cache never keeps a model alive, never copies one, and two caches
of the same model share it. Every method also takes ``model=`` explicitly (a hand-built cache, or one
whose model is gone, needs it; a clear ``ConfigError`` says so). Like TransformerLens the methods return
a tensor (``return_labels=True`` adds the labels), and ``layer=-1`` means "all layers".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor

from mechscope.errors import ConfigError

if TYPE_CHECKING:
    from mechscope.cache.analysis import PosSlice, TokenIds


def _layer(layer: int | None) -> int | None:
    return None if layer == -1 else layer


class CacheAnalysisMethods:
    """Mixin of ``ActivationCache``; see the module docstring."""

    _model_ref: Any

    def bound_model(self, model: Any = None) -> Any:
        """``model`` if given, else the model that made this cache (``ConfigError`` if neither)."""
        if model is not None:
            return model
        found = self._model_ref() if self._model_ref is not None else None
        if found is None:
            raise ConfigError("this cache is not bound to a model (built by hand, or its model was deleted): "
                              "pass model=..., e.g. cache.decompose_resid(model=model)")
        return found

    def _out(self, result: Any, return_labels: bool) -> Any:
        return (result.stack, result.labels) if return_labels else result.stack

    def _ln(self, stack: Tensor, apply_ln: bool, model: Any, layer: int | None, pos_slice: PosSlice) -> Tensor:
        from mechscope.cache.analysis import apply_ln_to_stack

        return apply_ln_to_stack(stack, self, model, layer, pos_slice) if apply_ln else stack  # type: ignore[arg-type]

    def accumulated_resid(self, layer: int | None = None, incl_mid: bool = False, apply_ln: bool = False,
                          pos_slice: PosSlice = None, return_labels: bool = False, *, model: Any = None) -> Any:
        """``cache/analysis.accumulated_resid``: [components batch pos d_model] (+ labels)."""
        from mechscope.cache.analysis import ResidStack, accumulated_resid

        m = self.bound_model(model)
        res = accumulated_resid(self, m.cfg.n_layers, _layer(layer), incl_mid, pos_slice)  # type: ignore[arg-type]
        stack = self._ln(res.stack, apply_ln, m, _layer(layer), pos_slice)
        return self._out(ResidStack(stack, res.labels), return_labels)

    def decompose_resid(self, layer: int | None = None, apply_ln: bool = False, pos_slice: PosSlice = None,
                        return_labels: bool = False, *, model: Any = None) -> Any:
        """``cache/analysis.decompose_resid``: the terms summing to the residual entering ``layer``."""
        from mechscope.cache.analysis import ResidStack, decompose_resid

        m = self.bound_model(model)
        res = decompose_resid(self, m, _layer(layer), pos_slice)  # type: ignore[arg-type]
        return self._out(ResidStack(self._ln(res.stack, apply_ln, m, _layer(layer), pos_slice), res.labels),
                         return_labels)

    def stack_head_results(self, layer: int | None = -1, return_labels: bool = False, incl_remainder: bool = False,
                           pos_slice: PosSlice = None, apply_ln: bool = False, *, model: Any = None) -> Any:
        """``cache/analysis.stack_head_results``: [layers·heads batch pos d_model] (+ labels ``L{l}H{h}``)."""
        from mechscope.cache.analysis import ResidStack, stack_head_results

        m = self.bound_model(model)
        res = stack_head_results(self, m, _layer(layer), pos_slice, incl_remainder)  # type: ignore[arg-type]
        return self._out(ResidStack(self._ln(res.stack, apply_ln, m, _layer(layer), pos_slice), res.labels),
                         return_labels)

    def apply_ln_to_stack(self, residual_stack: Tensor, layer: int | None = None, pos_slice: PosSlice = None,
                          *, model: Any = None) -> Tensor:
        """``cache/analysis.apply_ln_to_stack`` with the norm scale cached on this forward pass."""
        from mechscope.cache.analysis import apply_ln_to_stack

        return apply_ln_to_stack(residual_stack, self, self.bound_model(model), _layer(layer), pos_slice)  # type: ignore[arg-type]

    def logit_attrs(self, residual_stack: Tensor, tokens: TokenIds, incorrect_tokens: TokenIds | None = None,
                    pos_slice: PosSlice = None, *, model: Any = None) -> Tensor:
        """``cache/analysis.logit_attrs``: each component's direct contribution to a logit (difference)."""
        from mechscope.cache.analysis import logit_attrs

        return logit_attrs(residual_stack, self, self.bound_model(model), tokens, incorrect_tokens,  # type: ignore[arg-type]
                           pos_slice=pos_slice)


__all__ = ["CacheAnalysisMethods"]
