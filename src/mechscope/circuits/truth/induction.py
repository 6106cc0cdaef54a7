"""``induction``: the induction circuit of a small two-layer attention-only model trained here.

Training (seeded, one CPU core, about a minute): each batch is 3/4 sequences ``[BOS, F, A, A, F']`` (``A`` =
``h`` distinct random tokens, ``h`` drawn per sequence from ``[half_len // 2, half_len]``, at a random offset;
``F``, ``F'`` other random tokens; loss on the second copy of ``A``) and 1/4 second-order chains
(``x[t] = pi(x[t-2])`` with probability 0.6 for a fixed random permutation ``pi``; loss everywhere). The
model: 2 layers × 4 heads, d_model 64, LayerNorm, learned positions initialised sinusoidally. What it took
(each measured): with a fixed period the model learned "attend ``h - 1`` positions back" from positions alone
(loss 0.001 after 200 steps, every induction score ≈ 0.05); with ``A`` always right after BOS it attended to
half the query's position instead (induction scores ≈ 0.01); with random offsets but no chains no
previous-token head formed in 1,200 steps; with the chains as half the batch (batch 32, lr 1e-3)
previous-token heads formed by step 200 but no induction head by step 5,000; with 3/4 repeated sequences,
batch 64, lr 3e-3 induction scores reach ≈ 0.77 by step ~1,000. Weights are cached as safetensors under
``$MECHSCOPE_CACHE`` or ``~/.cache/mechscope``, in ``truths/induction-<hash of the settings>.safetensors``
(written atomically), so later builds only load them.

Which heads form the circuit is read from the trained model, not assumed: on held-out repeated sequences,
every head's attention gives a previous-token score (``analysis.heads.detect_heads``), a current-token score
(mean attention to its own position) and an induction score; a head has a role when its score is >=
``min_score``: previous-token heads ``P`` and current-token heads ``C`` in layer 0, induction heads ``I`` in
layer 1. The truth is the K-composition circuit with the paths that carry tokens into it:
``input->a0.hP<v>`` (P copies the previous token), ``a0.hP->a1.hI<k>`` (I's keys read it: K-composition),
``input->a1.hI<q>`` and ``a0.hC->a1.hI<q>`` (I's query is the current token, directly or as copied by C),
``input->a1.hI<v>`` and ``a0.hC->a1.hI<v>`` (I copies the token it finds), ``input->a0.hC<v>`` and
``a1.hI->logits``, for every P, C and I. The current-token heads were added after exact patching showed
that this model's induction heads read the token largely through them (``a0.h2->a1.h2<v>`` was the sixth
largest edge, above every K-composition edge). It is an identification, not a construction: the layer-0
heads' Q/K reads also matter (LayerNorm makes their positional attention depend on the tokens), so a perfect
method need not score 1.0 against it.

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

    d_vocab: int = 24
    """Vocabulary including BOS (id 0)."""
    half_len: int = 6
    """Longest repeated random block (context ``3 half_len + 1``)."""
    d_model: int = 64
    """Residual width."""
    n_heads: int = 4
    """Heads per layer."""
    d_head: int = 16
    """Per-head dimension."""
    steps: int = 1200
    """Optimiser steps."""
    batch: int = 64
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


def _second_order(cfg: InductionTruthConfig, n: int, pi: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``n`` chains ``[BOS, x1, x2, ...]`` with ``x[t] = pi(x[t-2])`` with probability 0.6, else random: a
    previous-token head pays off directly (the sequential draw is the chain's definition)."""
    x = torch.randint(1, cfg.d_vocab, (n, 3 * cfg.half_len + 1), generator=gen)
    x[:, 0] = 0
    follow = torch.rand(x.shape, generator=gen) < 0.6
    for t in range(3, x.shape[1]):
        x[:, t] = torch.where(follow[:, t], pi[x[:, t - 2] - 1], x[:, t])
    return x


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
    pi = torch.randperm(cfg.d_vocab - 1, generator=gen) + 1
    n_rep = (3 * cfg.batch) // 4
    model.train()
    for _ in range(cfg.steps):
        rep, rep_mask = _draw(cfg, n_rep, gen, fixed_h=False)
        mk = _second_order(cfg, cfg.batch - n_rep, pi, gen)
        tokens = torch.cat([rep, mk])
        mask = torch.cat([rep_mask, torch.ones(cfg.batch - n_rep, rep.shape[1] - 1, dtype=torch.bool)])
        mask[n_rep:, :2] = False  # the first two tokens of a second-order chain are random
        logits = model(tokens)[:, :-1][mask]
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


def identify_heads(model: HookedTransformer, cfg: InductionTruthConfig) -> tuple[dict[str, list[int]], dict[str, list[float]]]:
    """Heads by role from their attention on held-out repeated sequences (scores >= ``min_score``):
    ``previous`` (layer 0, attends to the previous token), ``current`` (layer 0, attends to its own
    position: it carries the current token on), ``induction`` (layer 1); with every head's scores."""
    from mechscope.analysis.heads import attention_patterns, detect_heads

    tokens = _draw(cfg, 64, torch.Generator().manual_seed(cfg.seed + 99), fixed_h=True)[0]
    s = detect_heads(model, tokens)
    pat = attention_patterns(model, tokens)[0]  # layer 0 [batch heads q k]
    current = pat.diagonal(dim1=-2, dim2=-1)[..., 1:].mean((0, 2))  # [heads], position 0 left out
    scores = {"previous": s.previous_token[0], "current": current, "induction": s.induction[1]}
    roles = {k: [h for h in range(cfg.n_heads) if float(v[h]) >= cfg.min_score] for k, v in scores.items()}
    return roles, {k: [round(float(x), 3) for x in v] for k, v in scores.items()}


def circuit_edges(previous: list[int], current: list[int], induction: list[int]) -> frozenset[str]:
    """The circuit's edges for layer-0 previous-token and current-token heads and layer-1 induction heads."""
    edges = {f"input->a0.h{p}<v>" for p in previous + current}
    for i in induction:
        edges |= {f"a0.h{p}->a1.h{i}<k>" for p in previous}
        edges |= {f"a0.h{c}->a1.h{i}<{x}>" for c in current for x in "qv"}
        edges |= {f"input->a1.h{i}<q>", f"input->a1.h{i}<v>", f"a1.h{i}->logits"}
    return frozenset(edges)


def induction_truth(cfg: InductionTruthConfig | None = None, *, n_pairs: int = 16) -> GroundTruth:
    """The ``induction`` ground truth (see the module docstring)."""
    cfg = cfg or InductionTruthConfig()
    model = trained_model(cfg)
    roles, scores = identify_heads(model, cfg)
    if not roles["previous"] or not roles["induction"]:
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
                       metric=Contrast(direction, name="induction"),
                       edges=circuit_edges(roles["previous"], roles["current"], roles["induction"]), readout=None,
                       description=f"trained 2-layer attention-only model; heads by attention role {roles} "
                                   f"(scores {scores})")


__all__ = ["InductionTruthConfig", "circuit_edges", "identify_heads", "induction_truth", "train_model",
           "trained_model"]
