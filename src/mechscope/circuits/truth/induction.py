"""``induction``: the induction circuit of a small two-layer attention-only model trained here.

Training (seeded, one CPU core, well under a minute): ``[BOS, F, A, A, F']`` where ``A`` is ``h`` distinct
random tokens, ``h`` drawn per sequence from ``[half_len // 2, half_len]``, starting at a random offset, and
``F``, ``F'`` other random tokens filling the context; next-token loss on the second copy of ``A`` (the first
copy is unpredictable). Both random choices matter: with a fixed period the model learned "attend ``h - 1``
positions back" from positions alone (loss 0.001 after 200 steps, every induction score ≈ 0.05), and with
``A`` always right after BOS it learned to attend to half the query's position instead (loss 0.003, induction
scores ≈ 0.01); no induction head formed in either case. The model (2 layers ×
4 heads, d_model 64, LayerNorm, learned positions initialised sinusoidally) learns to copy with induction
heads. Weights are cached as safetensors under ``$MECHSCOPE_CACHE`` or ``~/.cache/mechscope``, in
``truths/induction-<hash of the settings>.safetensors`` (written atomically), so later builds only load them.

Which heads form the circuit is read from the trained model, not assumed: on held-out repeated sequences,
``analysis.heads.detect_heads`` gives every head's previous-token and induction score; the layer-0 heads
with previous-token score >= ``min_score`` are the previous-token heads ``P`` and the layer-1 heads with
induction score >= ``min_score`` the induction heads ``I``. The truth is the K-composition circuit:
``input->a0.hP<v>`` (P copies the previous token), ``a0.hP->a1.hI<k>`` (I's keys read it),
``input->a1.hI<q>`` (I's query is the current token), ``input->a1.hI<v>`` (I copies the token it finds)
and ``a1.hI->logits``, for every P and I. It is an identification, not a construction: other paths
(the direct path, weak heads) also carry some of the effect, so a perfect method need not score 1.0.

Data: clean = ``[BOS, F, A, A, F']``, corrupted = ``[BOS, G, B, B, G']`` (other random tokens, the same block
length ``half_len`` and offset); the metric is a ``Contrast`` over the second copy: logit of the clean next
token minus that of the corrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mechscope.circuits.truth.base import Contrast, GroundTruth
from mechscope.errors import ConfigError, ModelFileError
from mechscope.models.config import AttentionConfig, ModelConfig, NormConfig, PositionalConfig
from mechscope.models.transformer import HookedTransformer


@dataclass(frozen=True, kw_only=True)
class InductionTruthConfig:
    """Model shape, training schedule and head-identification threshold."""

    d_vocab: int = 48
    """Vocabulary including BOS (id 0)."""
    half_len: int = 8
    """Length of the repeated random block."""
    d_model: int = 64
    """Residual width."""
    n_heads: int = 4
    """Heads per layer."""
    d_head: int = 16
    """Per-head dimension."""
    steps: int = 600
    """Optimiser steps."""
    batch: int = 32
    """Sequences per step."""
    lr: float = 3e-3
    """AdamW learning rate."""
    seed: int = 0
    """Seed of the initial weights and of the training data."""
    min_score: float = 0.4
    """Attention-score threshold for a previous-token / induction head."""

    def __post_init__(self) -> None:
        if self.half_len < 2 or 3 * self.half_len - self.half_len // 2 > self.d_vocab - 1:
            raise ConfigError(f"half_len={self.half_len} needs half_len >= 2 and d_vocab >= 3 half_len - half_len // 2 "
                              f"+ 1 (distinct tokens + BOS), got d_vocab={self.d_vocab}")
        if not 0 < self.min_score <= 1:
            raise ConfigError(f"min_score must be in (0, 1], got {self.min_score}")

    def key(self) -> str:
        """Hash of every setting that changes the trained weights."""
        d = asdict(self)
        d.pop("min_score")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def model_config(cfg: InductionTruthConfig) -> ModelConfig:
    """The attention-only model's shape."""
    return ModelConfig(d_model=cfg.d_model, n_layers=2, d_vocab=cfg.d_vocab, n_ctx=3 * cfg.half_len + 1,
                       attention=AttentionConfig(n_heads=cfg.n_heads, d_head=cfg.d_head), mlp=None,
                       norm=NormConfig(kind="layernorm"), positional=PositionalConfig(kind="learned"),
                       name="induction-truth", architecture="toy")


def repeated(cfg: InductionTruthConfig, n: int, gen: torch.Generator, h: torch.Tensor | None = None,
             r: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` sequences ``[BOS, F, A, A, F']`` of length ``3 half_len + 1``: ``A`` is ``h`` distinct tokens from
    1..d_vocab-1 starting after ``r`` filler tokens (``h``, ``r`` [n 1] per sequence; default ``half_len`` and
    0); the fillers are other tokens, all distinct."""
    h = torch.full((n, 1), cfg.half_len) if h is None else h
    r = torch.zeros(n, 1, dtype=torch.long) if r is None else r
    perm = torch.rand(n, cfg.d_vocab - 1, generator=gen).argsort(-1) + 1
    p = torch.arange(1, 3 * cfg.half_len + 1)[None]
    idx = torch.where(p <= r, h + p - 1, torch.where(p <= r + h, p - r - 1,
                                                     torch.where(p <= r + 2 * h, p - r - h - 1, p - h - 1)))
    return torch.cat([torch.zeros(n, 1, dtype=torch.long), perm.gather(1, idx)], dim=1)


def _targets(h: torch.Tensor, r: torch.Tensor, pos: int) -> torch.Tensor:
    """bool [n pos-1]: query positions ``q`` in ``[r+h+1, r+2h-1]`` (next token predictable by induction)."""
    q = torch.arange(pos - 1)[None]
    return (q >= r + h + 1) & (q <= r + 2 * h - 1)


def _draw(cfg: InductionTruthConfig, n: int, gen: torch.Generator, *, fixed_h: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sequences and their induction-target mask: ``h`` in [half_len // 2, half_len] (or half_len),
    offset ``r`` in [0, 3 half_len - 2h]."""
    h = (torch.full((n, 1), cfg.half_len) if fixed_h
         else torch.randint(cfg.half_len // 2, cfg.half_len + 1, (n, 1), generator=gen))
    r = (torch.rand(n, 1, generator=gen) * (3 * cfg.half_len - 2 * h + 1)).long()
    tokens = repeated(cfg, n, gen, h, r)
    return tokens, _targets(h, r, tokens.shape[1])


def train_model(cfg: InductionTruthConfig) -> HookedTransformer:
    """Train the model of the module docstring (deterministic for a given ``cfg``)."""
    from mechscope.models.components.embed import sinusoidal_table
    from mechscope.models.transformer import init_std

    torch.manual_seed(cfg.seed)
    model = HookedTransformer(model_config(cfg), seed=cfg.seed)
    with torch.no_grad():
        table = sinusoidal_table(model.cfg.n_ctx, cfg.d_model)
        model.W_pos.copy_(table * init_std(cfg.d_model) * 2 ** 0.5)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    model.train()
    for _ in range(cfg.steps):
        tokens, mask = _draw(cfg, cfg.batch, gen, fixed_h=False)
        logits = model(tokens)[:, :-1][mask]  # predict the second copy from its second token on
        loss = torch.nn.functional.cross_entropy(logits, tokens[:, 1:][mask])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def cache_dir() -> Path:
    """``$MECHSCOPE_CACHE/truths`` or ``~/.cache/mechscope/truths``."""
    return Path(os.environ.get("MECHSCOPE_CACHE") or Path.home() / ".cache" / "mechscope") / "truths"


def trained_model(cfg: InductionTruthConfig) -> HookedTransformer:
    """The trained model: read from the cache, or trained and then cached (atomically)."""
    from safetensors.torch import load_file, save_file

    from mechscope.train.checkpoint import atomic_write

    path = cache_dir() / f"induction-{cfg.key()}.safetensors"
    if path.exists():
        model = HookedTransformer(model_config(cfg))
        try:
            state = load_file(str(path))
            model.load_state_dict(state)
        except Exception as e:  # a truncated or foreign file: say which, and how to recover
            raise ModelFileError(f"cannot read the cached induction model {path}: {e}; delete it to retrain") from e
        return model.eval()
    model = train_model(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))
    return model


def identify_heads(model: HookedTransformer, cfg: InductionTruthConfig) -> tuple[list[int], list[int], dict[str, list[float]]]:
    """Previous-token heads of layer 0 and induction heads of layer 1, with every head's scores."""
    from mechscope.analysis.heads import detect_heads

    tokens = _draw(cfg, 64, torch.Generator().manual_seed(cfg.seed + 99), fixed_h=True)[0]
    s = detect_heads(model, tokens)
    prev = [h for h in range(cfg.n_heads) if float(s.previous_token[0, h]) >= cfg.min_score]
    ind = [h for h in range(cfg.n_heads) if float(s.induction[1, h]) >= cfg.min_score]
    scores = {"previous_token_layer0": [round(float(v), 3) for v in s.previous_token[0]],
              "induction_layer1": [round(float(v), 3) for v in s.induction[1]]}
    return prev, ind, scores


def circuit_edges(prev: list[int], ind: list[int]) -> frozenset[str]:
    """The K-composition circuit's edges for previous-token heads ``prev`` and induction heads ``ind``."""
    edges = {f"input->a0.h{p}<v>" for p in prev}
    for i in ind:
        edges |= {f"a0.h{p}->a1.h{i}<k>" for p in prev}
        edges |= {f"input->a1.h{i}<q>", f"input->a1.h{i}<v>", f"a1.h{i}->logits"}
    return frozenset(edges)


def induction_truth(cfg: InductionTruthConfig | None = None, *, n_pairs: int = 16) -> GroundTruth:
    """The ``induction`` ground truth (see the module docstring)."""
    cfg = cfg or InductionTruthConfig()
    model = trained_model(cfg)
    prev, ind, scores = identify_heads(model, cfg)
    if not prev or not ind:
        raise ConfigError(f"the trained model has no previous-token head or no induction head with score >= "
                          f"{cfg.min_score} (scores {scores}); train longer or lower min_score")
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    h = torch.full((n_pairs, 1), cfg.half_len)
    r = (torch.rand(n_pairs, 1, generator=gen) * (cfg.half_len + 1)).long()
    clean, corrupted = repeated(cfg, n_pairs, gen, h, r), repeated(cfg, n_pairs, gen, h, r)
    mask = _targets(h, r, clean.shape[1])  # [n pos-1]
    direction = torch.zeros(n_pairs, clean.shape[1], cfg.d_vocab)
    b, q = mask.nonzero(as_tuple=True)
    direction[b, q, clean[b, q + 1]] += 1.0
    direction[b, q, corrupted[b, q + 1]] -= 1.0
    return GroundTruth(name="induction", model=model, clean=clean, corrupted=corrupted,
                       metric=Contrast(direction, name="induction"), edges=circuit_edges(prev, ind), readout=None,
                       description=f"trained 2-layer attention-only model; previous-token heads a0.h{prev}, "
                                   f"induction heads a1.h{ind} identified by attention scores {scores}")


__all__ = ["InductionTruthConfig", "circuit_edges", "identify_heads", "induction_truth", "trained_model",
           "train_model"]
