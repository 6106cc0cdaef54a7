"""Evaluating dictionaries inside the model: reconstruction, sparsity and downstream loss, batched.

For a token set ``[n_seq pos]`` and dictionaries spliced at their hooks (``splice``: SAEs, transcoders,
crosscoders), one pass over the batches runs the clean model once (caching every written hook), the
zero-ablated model once per distinct set of written hooks, and each dictionary spliced in once, and
accumulates per dictionary:

* ``l0`` (active latents per token), ``mse`` (squared error summed over features, mean over tokens),
  ``fvu`` (fraction of variance unexplained, ``1 - explained variance``) of the activation the dictionary
  replaces (SAE: its input; transcoder: the clean target activation, e.g. the MLP output; crosscoder: the
  clean activations of all its layers, concatenated);
* ``ce_loss_clean``, ``ce_loss_spliced``, ``ce_loss_zero`` (next-token cross-entropy, nats) and
  ``ce_loss_recovered = (zero - spliced) / (zero - clean)``: 1 when the reconstruction is as good as the
  real activation for the model's predictions, 0 when it is as bad as deleting it;
* ``kl``: mean KL(clean next-token distribution || spliced one), nats per token;
* firing ``density [d_sae]``, ``dead_fraction`` (never fired on these tokens), ``dense_fraction``
  (fired on more than ``dense_threshold`` of them) and a log10-density histogram.

Positions follow the harvesting convention of ``activations.source``: by default position 0 (the
attention sink) and positions holding ``exclude_token_ids`` are neither spliced nor zero-ablated nor
scored; this is done with ordinary hooks on the splice's ``W.hook_sae_output`` points, which put the
clean pass's activation back there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from mechscope.dictionaries.base import Dictionary
from mechscope.dictionaries.splice import HookArg, SpliceSites, splice_at, splice_sites
from mechscope.errors import ConfigError, ShapeError


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Which positions count and how the statistics are summarised."""

    batch_size: int = 8
    """Sequences per forward pass (logits of ``batch_size * pos * d_vocab`` floats are held at once)."""
    exclude_first: bool = True
    """Keep position 0 clean and unscored (dictionaries are harvested without it)."""
    exclude_token_ids: tuple[int, ...] = ()
    """Positions holding these ids (padding) are kept clean and not scored."""
    dense_threshold: float = 0.1
    """A latent firing on more than this fraction of tokens counts as dense."""
    histogram_bins: int = 40
    """Bins of the log10 firing-density histogram over [-7, 0]."""

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"EvalConfig.batch_size must be a positive int, got {self.batch_size!r}")
        if not 0 < self.dense_threshold <= 1:
            raise ConfigError(f"EvalConfig.dense_threshold must be in (0, 1], got {self.dense_threshold}")
        if self.histogram_bins < 1:
            raise ConfigError(f"EvalConfig.histogram_bins must be >= 1, got {self.histogram_bins}")


class EvalResult(NamedTuple):
    """Evaluation of one dictionary (see the module docstring for each figure)."""

    l0: float
    mse: float
    fvu: float
    ce_loss_clean: float
    ce_loss_spliced: float
    ce_loss_zero: float
    ce_loss_recovered: float
    kl: float
    dead_fraction: float
    dense_fraction: float
    density: Tensor
    """``[d_sae]`` fraction of scored tokens on which each latent fired."""
    n_tokens: int
    """Positions that were spliced and measured."""
    reads: tuple[str, ...] = ()
    """Hooks the dictionary read."""
    writes: tuple[str, ...] = ()
    """Hooks it replaced (the zero-ablation baseline zeroes all of them)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready scalars (the density vector is summarised as a histogram)."""
        counts, edges = density_histogram(self.density)
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in self._asdict().items() if k != "density"}
        return out | {"density_histogram": {"log10_edges": edges.tolist(), "counts": counts.tolist(),
                                            "dead": int((self.density == 0).sum())}}


def density_histogram(density: Tensor, bins: int = 40, lo: float = -7.0) -> tuple[Tensor, Tensor]:
    """``(counts [bins], log10 edges [bins+1])`` of the firing densities of the latents that fired."""
    alive = density[density > 0].double().log10().clamp(lo, 0.0)
    counts = torch.histc(alive, bins=bins, min=lo, max=0.0).long() if alive.numel() else torch.zeros(bins, dtype=torch.long)
    return counts, torch.linspace(lo, 0.0, bins + 1)


class _Acc:
    """Streaming sums for one dictionary."""

    def __init__(self, d_sae: int) -> None:
        self.n = 0
        self.sq_err = 0.0
        self.t_sum: Tensor | None = None
        self.t_sq = 0.0
        self.fired = torch.zeros(d_sae, dtype=torch.int64)
        self.ce = 0.0
        self.kl = 0.0

    def add_recons(self, x: Tensor, recons: Tensor, acts: Tensor) -> None:
        x, recons = x.double(), recons.double()
        self.n += x.shape[0]
        self.sq_err += float((x - recons).pow(2).sum())
        self.t_sum = x.sum(0) if self.t_sum is None else self.t_sum + x.sum(0)
        self.t_sq += float(x.pow(2).sum())
        self.fired += (acts != 0).sum(0)


def _keep_mask(tokens: Tensor, cfg: EvalConfig) -> Tensor:
    keep = torch.ones_like(tokens, dtype=torch.bool)
    if cfg.exclude_first:
        keep[:, 0] = False
    if cfg.exclude_token_ids:
        keep &= ~torch.isin(tokens, torch.tensor(cfg.exclude_token_ids, dtype=tokens.dtype))
    return keep


def _next_token_stats(logits: Tensor, tokens: Tensor, score: Tensor,
                      ref_logp: Tensor | None) -> tuple[float, float, Tensor]:
    """Summed CE (and KL from ``ref_logp``) over scored predictions; returns the log-probs too."""
    logp = logits[:, :-1].float().log_softmax(-1)
    nll = -logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)
    ce = float(nll[score].sum())
    kl = 0.0
    if ref_logp is not None:
        kl = float((ref_logp.exp() * (ref_logp - logp)).sum(-1)[score].sum())
    return ce, kl, logp


def _run_spliced(model: Any, d: Dictionary, sites: SpliceSites, tokens: Tensor, keep: Tensor,
                 clean: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Logits with ``d`` spliced at the kept positions, and its target, recons and acts there.

    Excluded positions get the clean activation of each written hook back (from the clean pass's
    ``clean`` cache) through a hook on the splice's ``W.hook_sae_output`` points.
    """
    got: dict[str, Tensor] = {}

    def grab(x: Tensor, hp: Any) -> None:
        got[hp.name.rsplit(".", 1)[-1]] = x

    def only_kept(x: Tensor, hp: Any) -> Tensor:
        mask = keep.view(*keep.shape, *([1] * (x.dim() - 2)))
        return torch.where(mask, x, clean[hp.name.rsplit(".", 1)[0]].reshape(x.shape).to(x.dtype))

    with splice_at(model, d, sites) as s:
        names = [s["recons"], s["acts_post"]]
        with model.hooks(fwd=[*[(n, grab) for n in names], *[(n, only_kept) for n in s.output_names]]):
            logits = model(tokens)
    recons = got["hook_sae_recons"]
    target = torch.stack([clean[h].reshape(*clean[h].shape[:2], -1) for h in sites.writes], dim=-2)
    rows = {"target": target.reshape(recons.shape), "recons": recons, "acts": got["hook_sae_acts_post"]}
    return logits, {k: v[keep] for k, v in rows.items()}


def _zero_ablated(model: Any, hooks: tuple[str, ...], tokens: Tensor, keep: Tensor) -> Tensor:
    def zero(x: Tensor, hp: Any) -> Tensor:
        mask = keep.view(*keep.shape, *([1] * (x.dim() - 2)))
        return x.masked_fill(mask, 0.0)

    with model.hooks(fwd=[(h, zero) for h in hooks]):
        return model(tokens)


def _resolve_sites(model: Any, dictionaries: Sequence[Dictionary], hooks: Sequence[HookArg] | None) -> list[SpliceSites]:
    hook_list = list(hooks) if hooks is not None else [None] * len(dictionaries)
    if len(hook_list) != len(dictionaries):
        raise ConfigError(f"got {len(dictionaries)} dictionaries but {len(hook_list)} hooks")
    return [splice_sites(model, d, h) for d, h in zip(dictionaries, hook_list)]


@torch.inference_mode()
def evaluate_many(model: Any, dictionaries: Sequence[Dictionary], tokens: Tensor, *,
                  hooks: Sequence[HookArg] | None = None, cfg: EvalConfig | None = None,
                  progress: bool = False) -> list[EvalResult]:
    """Evaluate several dictionaries on the same tokens, sharing the clean and zero-ablation passes.

    Args:
        model: a ``HookedTransformer``.
        dictionaries: SAEs, transcoders and crosscoders; each is spliced (``splice``) at ``hooks[i]``
            (default: its config's hooks; a transcoder takes its input hook or an ``(input, target)``
            pair, a crosscoder a list of hooks). The zero-ablation baseline zeroes every hook the
            dictionary writes (a transcoder: its target; a crosscoder: all its layers).
        tokens: int ``[n_seq pos]`` (each row is scored independently).
        cfg: positions and summaries.
    """
    from tqdm.auto import tqdm

    cfg = cfg or EvalConfig()
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise ShapeError(f"evaluation tokens must be [n_seq pos] with pos >= 2, got {tuple(tokens.shape)}")
    sites = _resolve_sites(model, dictionaries, hooks)
    written = sorted({h for s in sites for h in s.writes})
    accs = [_Acc(d.cfg.d_sae) for d in dictionaries]
    zero_ce = dict.fromkeys((s.writes for s in sites), 0.0)
    clean_ce, n_scored, n_kept = 0.0, 0, 0
    starts = range(0, tokens.shape[0], cfg.batch_size)
    for start in tqdm(starts, desc="eval", disable=not progress):
        batch = tokens[start:start + cfg.batch_size].long()
        keep = _keep_mask(batch, cfg)
        score = keep[:, :-1].clone()
        if cfg.exclude_token_ids:
            score &= ~torch.isin(batch[:, 1:], torch.tensor(cfg.exclude_token_ids, dtype=batch.dtype))
        logits, clean = model.run_with_cache(batch, names=written)
        ce, _, ref = _next_token_stats(logits, batch, score, None)
        clean_ce += ce
        n_scored += int(score.sum())
        n_kept += int(keep.sum())
        for hs in zero_ce:
            zero_ce[hs] += _next_token_stats(_zero_ablated(model, hs, batch, keep), batch, score, None)[0]
        for d, site, acc in zip(dictionaries, sites, accs):
            logits, rows = _run_spliced(model, d, site, batch, keep, clean)
            ce, kl, _ = _next_token_stats(logits, batch, score, ref)
            acc.ce += ce
            acc.kl += kl
            n = rows["target"].shape[0]
            acc.add_recons(rows["target"].reshape(n, -1), rows["recons"].reshape(n, -1), rows["acts"])
    if n_scored == 0 or n_kept == 0:
        raise ConfigError("no position was scored: the tokens are all excluded (first position / excluded ids)")
    return [_finish(acc, clean_ce / n_scored, zero_ce[site.writes] / n_scored, n_scored, cfg, site)
            for acc, site in zip(accs, sites)]


CE_GAP_WARN = 0.05
"""Nats: below this gap between zero-ablated and clean loss, ``ce_loss_recovered`` is mostly noise."""


def _finish(acc: _Acc, clean: float, zero: float, n_scored: int, cfg: EvalConfig, sites: SpliceSites) -> EvalResult:
    spliced = acc.ce / n_scored
    total_var = acc.t_sq - (float(acc.t_sum.pow(2).sum()) if acc.t_sum is not None else 0.0) / acc.n
    density = acc.fired.double() / acc.n
    denom = zero - clean
    if abs(denom) < CE_GAP_WARN:
        import warnings

        warnings.warn(f"ce_loss_recovered is unreliable for {', '.join(sites.writes)}: zero-ablating it changes the "
                      f"loss by only {denom:+.4f} nats (clean {clean:.4f}, zero-ablated {zero:.4f}), so the ratio "
                      f"divides by almost nothing; compare ce_loss_spliced - ce_loss_clean ({spliced - clean:+.4f}) "
                      "and kl instead", stacklevel=3)
    return EvalResult(
        l0=float(acc.fired.sum()) / acc.n, mse=acc.sq_err / acc.n, fvu=acc.sq_err / max(total_var, 1e-30),
        ce_loss_clean=clean, ce_loss_spliced=spliced, ce_loss_zero=zero,
        ce_loss_recovered=(zero - spliced) / denom if abs(denom) > 1e-12 else math.nan,
        kl=acc.kl / n_scored, dead_fraction=float((density == 0).double().mean()),
        dense_fraction=float((density > cfg.dense_threshold).double().mean()),
        density=density.float(), n_tokens=acc.n, reads=sites.reads, writes=sites.writes,
    )


def evaluate(model: Any, dictionary: Dictionary, tokens: Tensor, *, hook: str | None = None,
             cfg: EvalConfig | None = None, progress: bool = False) -> EvalResult:
    """Evaluate one dictionary spliced at ``hook`` (default its ``cfg.hook_name``) on ``tokens [n_seq pos]``.

    Example:
        >>> res = evaluate(model, sae, tokens)          # doctest: +SKIP
        >>> res.l0, res.fvu, res.ce_loss_recovered
    """
    return evaluate_many(model, [dictionary], tokens, hooks=[hook], cfg=cfg, progress=progress)[0]


__all__ = ["EvalConfig", "EvalResult", "evaluate", "evaluate_many", "density_histogram"]
