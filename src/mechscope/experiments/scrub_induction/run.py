"""Causal scrubbing of induction (Chan et al. 2022, the paper's setting) on a two-layer attention-only model.

``train_model`` fits a small two-layer attention-only transformer (the shape of ``experiments/induction.py``:
no MLP, learned positions) on random token sequences holding a repeated span ``A A`` of random length at a
random offset (``repeated_spans``), seeded, in about a minute; the copied tokens are predictable only by induction. ``find_heads`` names the layer-0 previous-token head and the
layer-1 induction head by their attention scores (``analysis.heads``). Three hypotheses about the loss on the
second half are then scrubbed (everything not named is resampled from another sequence):

* ``full induction``: embeddings → previous-token heads → induction heads' *keys*, embeddings → induction
  heads' queries and values, induction heads → output (and the embeddings → output, the direct path);
* ``previous-token head only``: the previous-token heads matter (into every later input and the output),
  the induction heads do not;
* ``induction head only``: the induction heads matter with embeddings-only inputs; the previous-token heads
  that should build their keys are resampled.

(Previous-token heads: layer-0 heads with previous-token score >= 0.3; induction heads: layer-1 heads with
induction score >= 0.3; at least the best head of each.)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mechscope.abstraction.scrubbing import Hypothesis, Resample, identity, model_nodes, scrub


@dataclass(frozen=True, kw_only=True)
class ScrubInductionConfig:
    d_vocab: int = 64
    half_len: int = 16
    d_model: int = 64
    n_heads: int = 4
    d_head: int = 16
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    n_eval: int = 64


def model_config(cfg: ScrubInductionConfig) -> Any:
    from mechscope.models.config import AttentionConfig, ModelConfig, NormConfig, PositionalConfig

    return ModelConfig(d_model=cfg.d_model, n_layers=2, d_vocab=cfg.d_vocab, n_ctx=2 * cfg.half_len,
                       attention=AttentionConfig(n_heads=cfg.n_heads, d_head=cfg.d_head), mlp=None,
                       norm=NormConfig(kind="none"), positional=PositionalConfig(kind="learned"),
                       architecture="attn-only-2l")


def repeated_spans(cfg: ScrubInductionConfig, batch: int, seed: int) -> tuple[Tensor, Tensor]:
    """Random sequences of ``2·half_len`` tokens in which a span of random length m (4..half_len) starting at a
    random position is copied right after itself; the mask marks the copied tokens after the first (the ones
    only induction predicts). Random lengths and offsets leave no positional shortcut."""
    gen = torch.Generator().manual_seed(seed)
    n = 2 * cfg.half_len
    toks = torch.randint(0, cfg.d_vocab, (batch, n), generator=gen)
    mask = torch.zeros(batch, n, dtype=torch.bool)
    m = torch.randint(4, cfg.half_len + 1, (batch,), generator=gen)
    start = (torch.rand(batch, generator=gen) * (n - 2 * m + 1)).long()
    pos = torch.arange(n)[None, :]
    copy = (pos >= (start + m)[:, None]) & (pos < (start + 2 * m)[:, None])
    src = (pos - m[:, None]).clamp_min(0)
    toks = torch.where(copy, toks.gather(1, src), toks)
    mask = copy & (pos > (start + m)[:, None])
    return toks, mask


def train_model(cfg: ScrubInductionConfig) -> Any:
    """Seeded training on fresh sequences with repeated spans (loss on every next token)."""
    from mechscope.models.transformer import HookedTransformer

    model = HookedTransformer(model_config(cfg), seed=cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    for step in range(cfg.steps):
        toks, _ = repeated_spans(cfg, cfg.batch_size, seed=cfg.seed * 1_000_003 + step + 1)
        logits = model(toks)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, cfg.d_vocab), toks[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def find_heads(model: Any, cfg: ScrubInductionConfig, threshold: float = 0.3
               ) -> tuple[list[str], list[str], dict[str, Any]]:
    """Layer-0 previous-token heads and layer-1 induction heads: every head scoring >= ``threshold`` (at least
    the best one of each), with all the scores."""
    from mechscope.analysis.heads import detect_heads

    s = detect_heads(model, half_len=cfg.half_len, batch=16, seed=cfg.seed + 99)
    prev_s, ind_s = s.previous_token[0], s.induction[1]
    prev = [f"0.{h}" for h in range(len(prev_s)) if prev_s[h] >= threshold] or [f"0.{int(prev_s.argmax())}"]
    ind = [f"1.{h}" for h in range(len(ind_s)) if ind_s[h] >= threshold] or [f"1.{int(ind_s.argmax())}"]
    return prev, ind, {"previous_token_scores": [round(float(v), 3) for v in prev_s],
                       "induction_scores": [round(float(v), 3) for v in ind_s]}


def hypotheses(prev: list[str], ind: list[str]) -> list[Hypothesis]:
    """The three induction hypotheses of the module docstring (for sets of heads)."""
    emb_prev = {("embed", p, w) for p in prev for w in "qkv"}
    full = frozenset(emb_prev | {(p, i, "k") for p in prev for i in ind} | {("embed", i, w) for i in ind for w in "qv"}
                     | {(i, "output", "") for i in ind} | {("embed", "output", "")})
    ind_only = frozenset({("embed", i, w) for i in ind for w in "qkv"} | {(i, "output", "") for i in ind}
                         | {("embed", "output", "")})
    feats: dict[str, Resample] = dict.fromkeys(["embed", *prev, *ind], identity)
    ind_feats: dict[str, Resample] = dict.fromkeys(["embed", *ind], identity)
    return [Hypothesis("full induction", feats, full), Hypothesis.full("previous-token head only", ["embed", *prev]),
            Hypothesis("induction head only", ind_feats, ind_only)]


def run(run_dir: str | Path, cfg: ScrubInductionConfig | None = None, *, resample: str = "shared") -> dict[str, Any]:
    """Train (or reuse) the model in ``run_dir`` and scrub the three hypotheses (+ the two baselines)."""
    from mechscope.models.transformer import HookedTransformer

    cfg = cfg or ScrubInductionConfig()
    root = Path(run_dir)
    if (root / "model.safetensors").is_file():
        model = HookedTransformer.load(root).eval()
        if (root / "scrub_config.json").is_file():  # the run's own shapes; only the evaluation size may change
            saved = json.loads((root / "scrub_config.json").read_text())
            cfg = ScrubInductionConfig(**{**saved, "n_eval": cfg.n_eval})
    else:
        model = train_model(cfg)
        model.save(root)
        from mechscope.dictionaries.io import atomic_write_json

        atomic_write_json(root / "scrub_config.json", asdict(cfg))
    prev, ind, scores = find_heads(model, cfg)
    toks, mask = repeated_spans(cfg, cfg.n_eval, seed=cfg.seed + 12345)
    hyps = [Hypothesis.full("everything", model_nodes(model))] + hypotheses(prev, ind) + [Hypothesis("nothing", {})]
    results = [scrub(model, h, toks, mask, seed=cfg.seed, resample=resample) for h in hyps]
    return {"resample": resample, "previous_token_heads": prev, "induction_heads": ind, **scores,
            "loss_clean": round(results[0].loss_clean, 4), "loss_random": round(results[0].loss_random, 4),
            "hypotheses": [{"name": r.name, "loss": round(r.loss, 4), "loss_recovered": round(r.loss_recovered, 4)}
                           for r in results]}


__all__ = ["ScrubInductionConfig", "find_heads", "hypotheses", "run", "train_model"]
