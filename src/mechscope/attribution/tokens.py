"""Input-token attributions: integrated gradients, Shapley value sampling, LIME and embedding patching.

Every method perturbs the *token embeddings* (``hook_embed``; positional embeddings and everything after
stay the model's own) between the real embedding ``e_i`` and a baseline ``b_i`` (the zero vector, or the
embedding of a baseline token), and reads a scalar ``metric`` of the logits at one position (``readout``,
default the last). Perturbed inputs are evaluated in batches through one hook on ``hook_embed``; only the
readout position is unembedded (``stop_at_layer`` + ``ln_final`` + ``unembed``), so a batch costs the
blocks plus one ``[batch d_model] @ W_U``.

* ``ig``: integrated gradients (Sundararajan et al. 2017), ``(e - b) · ∫ grad f(b + α(e - b)) dα`` summed
  over ``d_model``; all interpolation steps run as one batch, one forward and one backward (captum's
  quadrature rules, so the numbers equal captum's ``IntegratedGradients`` on the same inputs). Completeness:
  the attributions sum to ``f(e) - f(b)`` up to the quadrature error.
* ``shapley``: Shapley value sampling over tokens (Castro et al. 2009; captum's ``ShapleyValueSampling``):
  ``n_samples`` random orders, each adds tokens one by one from the baseline; a token's value is its mean
  marginal change. Efficiency holds exactly: the values sum to ``f(e) - f(b)``.
* ``lime``: LIME (Ribeiro et al. 2016): random keep-masks (each token kept with probability 1/2), a weighted
  least-squares linear surrogate with the exponential kernel on the fraction of tokens removed.
* ``patch``: activation patching of one token embedding at a time (the reference): ``f(e) - f(e with e_i
  replaced by b_i)``.

Positions in ``fixed`` (default: none; the CLI fixes a prepended BOS, the attention sink) are never perturbed
and get attribution 0. Leading positions that never change (fixed, or whose token is the baseline token) run
once; every batch continues from their cached keys/values (``KVCache``), which is exact under causal attention.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechscope.errors import ConfigError, ShapeError, TokenError

Method = Literal["ig", "shapley", "lime", "patch"]
METHODS: tuple[str, ...] = ("ig", "shapley", "lime", "patch")
IGRule = Literal["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"]
MetricFn = Callable[[Tensor], Tensor]
"""``metric(logits [batch d_vocab]) -> [batch]``: the scalar to attribute, per row."""


@dataclass(frozen=True)
class TokenAttribution:
    """Per-token attributions of one prompt under one method."""

    tokens: list[int]
    """Token ids of the prompt."""
    attributions: Tensor
    """``[pos]`` attribution of each token (0 at fixed positions)."""
    method: str
    """``ig``, ``shapley``, ``lime`` or ``patch``."""
    metric_full: float
    """Metric on the real input."""
    metric_baseline: float
    """Metric with every non-fixed token at its baseline."""
    wall_seconds: float
    """Time the method took."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Method details (steps, samples, rule, seed)."""

    def to_json(self, str_tokens: Sequence[str] | None = None) -> dict[str, Any]:
        """The CLI's JSON: ``tokens``, ``attributions``, ``method``, ``wall_seconds`` and the metric values."""
        return {"tokens": list(str_tokens) if str_tokens is not None else self.tokens,
                "attributions": [float(a) for a in self.attributions], "method": self.method,
                "wall_seconds": self.wall_seconds, "metric_full": self.metric_full,
                "metric_baseline": self.metric_baseline, **self.extras}


def answer_metric(answer: int, wrong: int | None = None) -> MetricFn:
    """``logit[answer] - logit[wrong]`` (or ``logit[answer]`` alone) per row of ``[batch d_vocab]`` logits."""

    def metric(logits: Tensor) -> Tensor:
        out = logits[:, answer]
        return out - logits[:, wrong] if wrong is not None else out

    return metric


def single_token(tokenizer: Any, text: str, what: str = "answer") -> int:
    """The id of ``text`` if it is one token; else ``TokenError`` showing how it splits."""
    try:
        return int(tokenizer.to_single_token(text))
    except TokenError as e:
        raise TokenError(f"{what}: {e}") from None


# -- the perturbed forward ------------------------------------------------------------------------------
class EmbedRunner:
    """Evaluates ``metric`` on batches of replacement token embeddings for one prompt (see module docstring)."""

    def __init__(self, model: Any, tokens: Tensor, metric: MetricFn, *, baseline: int | None = None,
                 readout: int = -1, fixed: Sequence[int] = ()) -> None:
        if tokens.dim() == 2:
            if tokens.shape[0] != 1:
                raise ShapeError(f"token attribution takes one prompt: tokens [pos] or [1 pos], got {tuple(tokens.shape)}")
            tokens = tokens[0]
        if tokens.dim() != 1 or tokens.numel() == 0:
            raise ShapeError(f"tokens must be [pos] or [1 pos] with pos >= 1, got {tuple(tokens.shape)}")
        self.model, self.tokens, self.metric = model, tokens.long(), metric
        self.pos = int(tokens.shape[0])
        if not -self.pos <= readout < self.pos:
            raise ConfigError(f"readout must be a position in [-{self.pos}, {self.pos}), got {readout}")
        self.readout = readout % self.pos
        bad = [p for p in fixed if not -self.pos <= p < self.pos]
        if bad:
            raise ConfigError(f"fixed positions {bad} are outside the prompt of {self.pos} tokens")
        self.fixed = sorted({p % self.pos for p in fixed})
        with torch.no_grad():
            self.embed: Tensor = model.embed(self.tokens[None])[0].detach()  # [pos d]
            if baseline is None:
                base = torch.zeros_like(self.embed)
            else:
                if not 0 <= baseline < model.cfg.d_vocab:
                    raise TokenError(f"baseline token id must be in [0, {model.cfg.d_vocab}), got {baseline}")
                base = model.embed(torch.full_like(self.tokens[None], baseline))[0]
            base[self.fixed] = self.embed[self.fixed]
        self.baseline: Tensor = base
        self.free = [p for p in range(self.pos) if p not in self.fixed]
        # the leading positions whose embedding equals its baseline never change between perturbed inputs:
        # they run once, and every batch continues from their keys/values (exact: causal attention)
        same = (self.embed == self.baseline).all(-1).tolist()
        n = 0
        while n < self.pos and same[n]:
            n += 1
        self.prefix = min(n, self.readout)
        self._prefix_kv: tuple[list[Tensor], list[Tensor]] | None = None

    def run(self, embeds: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, " batch"]:
        """``metric`` with the token embeddings replaced by ``embeds`` (gradients flow if they require them)."""
        m = self.model
        c = self.prefix
        toks = self.tokens[None, c:].expand(embeds.shape[0], -1)
        new = embeds[:, c:]
        past = self._prefix_cache(embeds.shape[0])  # before the hook: the prefix runs on its real embeddings
        with m.hooks(fwd=[("hook_embed", lambda x, hook: new.to(x.dtype))]):
            resid = m(toks, stop_at_layer=m.cfg.n_layers, past_kv=past)
        r = self.readout - c
        logits = m.unembed(m.ln_final(resid[:, r:r + 1]))[:, 0]
        out = self.metric(logits)
        if out.shape != (embeds.shape[0],):
            raise ShapeError(f"metric must map logits [batch d_vocab] to [batch], got shape {tuple(out.shape)}")
        return out

    def _prefix_cache(self, batch: int) -> Any:
        """A ``KVCache`` of the constant prefix (computed once), expanded to ``batch`` rows; None if no prefix."""
        if self.prefix == 0:
            return None
        from mechscope.models.components.attention import KVCache

        m = self.model
        if self._prefix_kv is None:
            cache = KVCache(m.cfg.n_layers)
            with torch.no_grad():
                m(self.tokens[None, :self.prefix], stop_at_layer=m.cfg.n_layers, past_kv=cache)
            self._prefix_kv = ([k.detach() for k in cache.keys if k is not None],
                               [v.detach() for v in cache.values if v is not None])
        out = KVCache(m.cfg.n_layers)
        keys, values = self._prefix_kv
        out.keys = [k.expand(batch, -1, -1, -1) for k in keys]
        out.values = [v.expand(batch, -1, -1, -1) for v in values]
        out.mask = torch.ones(batch, self.prefix, dtype=torch.bool)
        return out

    @torch.no_grad()
    def run_masks(self, masks: Tensor, batch_size: int) -> Tensor:
        """``metric`` for keep-masks ``[n pos]`` (1 = real embedding, 0 = baseline), in batches."""
        outs = []
        diff = self.embed - self.baseline
        for start in range(0, masks.shape[0], batch_size):
            mk = masks[start:start + batch_size].to(self.embed.dtype)
            outs.append(self.run(self.baseline + mk[:, :, None] * diff))
        return torch.cat(outs)

    def endpoints(self) -> tuple[float, float]:
        """``(metric(real), metric(baseline))``."""
        vals = self.run_masks(torch.stack([torch.ones(self.pos), torch.zeros(self.pos)]), 2)
        return float(vals[0]), float(vals[1])


# -- integrated gradients --------------------------------------------------------------------------------
def ig_rule(rule: str, n_steps: int) -> tuple[list[float], list[float]]:
    """``(step_sizes, alphas)`` of a quadrature rule on [0, 1] (captum's ``approximation_parameters``)."""
    if n_steps < 1 or (rule == "riemann_trapezoid" and n_steps < 2):
        raise ConfigError(f"n_steps must be >= 1 (>= 2 for riemann_trapezoid), got {n_steps}")
    n = n_steps
    if rule == "gausslegendre":
        import numpy as np

        x, w = np.polynomial.legendre.leggauss(n)
        return [float(v) for v in 0.5 * w], [float(v) for v in 0.5 * (1 + x)]
    lo_hi = {"riemann_trapezoid": (0.0, 1.0), "riemann_left": (0.0, 1 - 1 / n), "riemann_right": (1 / n, 1.0),
             "riemann_middle": (1 / (2 * n), 1 - 1 / (2 * n))}
    if rule not in lo_hi:
        raise ConfigError(f"unknown integration rule {rule!r}; allowed: gausslegendre, riemann_trapezoid, "
                          f"riemann_left, riemann_right, riemann_middle")
    lo, hi = lo_hi[rule]
    alphas = torch.linspace(lo, hi, n).tolist()  # float32 grid, as captum builds it
    if rule == "riemann_trapezoid":  # the proper trapezoid weights (sum 1); captum's sum to (n - 1) / n
        return [1 / (2 * (n - 1))] + [1 / (n - 1)] * (n - 2) + [1 / (2 * (n - 1))], alphas
    return [1 / n] * n, alphas


def integrated_gradients(runner: EmbedRunner, n_steps: int = 32, rule: IGRule = "gausslegendre",
                         batch_size: int | None = None) -> Float[Tensor, " pos"]:
    """IG of every token (summed over ``d_model``); all steps in batches of ``batch_size`` (default: one)."""
    sizes, alphas = ig_rule(rule, n_steps)
    e, b = runner.embed, runner.baseline
    diff = e - b
    a = torch.tensor(alphas, dtype=e.dtype)
    w = torch.tensor(sizes, dtype=e.dtype)
    bs = batch_size or n_steps
    total = torch.zeros_like(e)
    with torch.enable_grad():
        for start in range(0, n_steps, bs):
            ak, wk = a[start:start + bs], w[start:start + bs]
            x = (b + ak[:, None, None] * diff).requires_grad_(True)
            vals = runner.run(x)
            (g,) = torch.autograd.grad(vals.sum(), [x])
            total += (g * wk[:, None, None]).sum(0)
    attr = (total * diff).sum(-1)
    attr[runner.fixed] = 0.0
    return attr.detach()


# -- Shapley value sampling --------------------------------------------------------------------------------
def shapley_sampling(runner: EmbedRunner, n_samples: int = 16, seed: int = 0,
                     batch_size: int = 64) -> Float[Tensor, " pos"]:
    """Shapley value sampling over the free tokens: ``n_samples`` random orders, every prefix in batches."""
    if n_samples < 1:
        raise ConfigError(f"n_samples must be >= 1, got {n_samples}")
    free = torch.tensor(runner.free, dtype=torch.long)
    n_free = len(runner.free)
    attr = torch.zeros(runner.pos, dtype=runner.embed.dtype)
    if n_free == 0:
        return attr
    gen = torch.Generator().manual_seed(seed)
    orders = torch.stack([free[torch.randperm(n_free, generator=gen)] for _ in range(n_samples)])  # [S F]
    # prefix masks: row (s, j) keeps the first j tokens of order s, j = 0..F
    rank_of = torch.full((n_samples, runner.pos), -1, dtype=torch.long)
    rank_of[torch.arange(n_samples)[:, None], orders] = torch.arange(n_free).expand(n_samples, -1)
    j = torch.arange(n_free + 1)
    masks = (rank_of[:, None, :] < j[None, :, None]) & (rank_of[:, None, :] >= 0)  # [S F+1 pos]
    masks[:, :, runner.fixed] = True
    vals = runner.run_masks(masks.reshape(-1, runner.pos).float(), batch_size).view(n_samples, n_free + 1)
    marginal = vals[:, 1:] - vals[:, :-1]  # [S F]: adding orders[s, j]
    attr.index_add_(0, orders.reshape(-1), marginal.reshape(-1).to(attr.dtype))
    return attr / n_samples


# -- LIME ----------------------------------------------------------------------------------------------------
def lime(runner: EmbedRunner, n_samples: int = 128, seed: int = 0, kernel_width: float = 0.75,
         batch_size: int = 64) -> Float[Tensor, " pos"]:
    """LIME: weighted least squares of the metric on random keep-masks (intercept included)."""
    n_free = len(runner.free)
    if n_samples < n_free + 2:
        raise ConfigError(f"LIME needs n_samples >= free tokens + 2 = {n_free + 2} to fit its surrogate, "
                          f"got {n_samples}")
    attr = torch.zeros(runner.pos, dtype=runner.embed.dtype)
    if n_free == 0:
        return attr
    gen = torch.Generator().manual_seed(seed)
    keep = (torch.rand(n_samples, n_free, generator=gen) < 0.5).double()
    keep[0] = 1.0  # the real input itself, as LIME always includes it
    masks = torch.ones(n_samples, runner.pos)
    masks[:, runner.free] = keep.float()
    y = runner.run_masks(masks, batch_size).double()
    removed = 1.0 - keep.mean(1)
    w = torch.exp(-(removed ** 2) / kernel_width ** 2)
    design = torch.cat([keep, torch.ones(n_samples, 1, dtype=torch.float64)], 1)
    sw = w.sqrt()[:, None]
    coef = torch.linalg.lstsq(design * sw, y[:, None] * sw, driver="gelsd").solution[:n_free, 0]
    attr[runner.free] = coef.to(attr.dtype)
    return attr


# -- embedding patching ----------------------------------------------------------------------------------------
def patch_embeddings(runner: EmbedRunner, batch_size: int = 64) -> Float[Tensor, " pos"]:
    """``f(real) - f(real with token i at its baseline)`` for every free token (one batch of pos rows)."""
    masks = torch.ones(runner.pos + 1, runner.pos)
    masks[torch.arange(runner.pos), torch.arange(runner.pos)] = 0.0
    vals = runner.run_masks(masks, batch_size)
    attr = vals[-1] - vals[:-1]
    attr[runner.fixed] = 0.0
    return attr


# -- one entry point ------------------------------------------------------------------------------------------------
def attribute_tokens(model: Any, tokens: Int[Tensor, "*batch pos"], metric: MetricFn, method: str = "ig", *,
                     baseline: int | None = None, readout: int = -1, fixed: Sequence[int] = (),
                     n_steps: int = 32, rule: IGRule = "gausslegendre", n_samples: int | None = None,
                     seed: int = 0, batch_size: int = 64) -> TokenAttribution:
    """Attribute ``metric`` to the tokens of one prompt with ``method`` (see the module docstring).

    Example:
        >>> a = attribute_tokens(model, tokens, answer_metric(paris), "ig", fixed=[0])  # doctest: +SKIP
        >>> a.attributions.sum(), a.metric_full - a.metric_baseline                     # doctest: +SKIP
    """
    if method not in METHODS:
        raise ConfigError(f"unknown token attribution method {method!r}; allowed: {', '.join(METHODS)}")
    runner = EmbedRunner(model, tokens, metric, baseline=baseline, readout=readout, fixed=fixed)
    t0 = time.perf_counter()
    extras: dict[str, Any] = {"baseline": "zero" if baseline is None else int(baseline)}
    if method == "ig":
        attr = integrated_gradients(runner, n_steps, rule, batch_size=None)
        extras.update(n_steps=n_steps, rule=rule)
    elif method == "shapley":
        n = n_samples or 16
        attr = shapley_sampling(runner, n, seed, batch_size)
        extras.update(n_samples=n, seed=seed)
    elif method == "lime":
        n = n_samples or max(128, 4 * len(runner.free) + 2)
        attr = lime(runner, n, seed, batch_size=batch_size)
        extras.update(n_samples=n, seed=seed)
    else:
        attr = patch_embeddings(runner, batch_size)
    wall = time.perf_counter() - t0
    full, base = runner.endpoints()
    return TokenAttribution([int(t) for t in runner.tokens], attr.detach().cpu(), method, full, base, wall, extras)


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two equal-length vectors (average ranks for ties); NaN if constant."""
    from scipy.stats import spearmanr

    if a.shape != b.shape or a.numel() < 2:
        raise ShapeError(f"spearman needs two equal-length vectors of >= 2 values, got {tuple(a.shape)}, {tuple(b.shape)}")
    r = spearmanr(a.double().numpy(), b.double().numpy()).statistic
    return float(r) if math.isfinite(float(r)) else float("nan")


__all__ = ["TokenAttribution", "EmbedRunner", "answer_metric", "single_token", "integrated_gradients", "ig_rule",
           "shapley_sampling", "lime", "patch_embeddings", "attribute_tokens", "spearman", "METHODS"]
