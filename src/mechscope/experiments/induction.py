"""Induction heads on real text (Elhage et al. 2021; Olsson et al. 2022), end to end on a CPU.

``train`` fits three attention-only models (no MLP, so the weights read as circuits; LayerNorm by default,
``norm="none"`` makes them exact) on a real corpus (default: the Python standard library's source in
SmolLM2's 2047 commonest BPE tokens + OOV):

* ``zero_layer``: embed → unembed, a bigram table; ``W_E W_U`` should match the corpus's bigram statistics;
* ``one_layer``: one attention layer; its QK/OV circuits are skip-trigram tables "A … B → C";
* ``two_layer``: two attention layers, evaluated every ``eval_every`` steps while it trains: the
  in-context-learning (ICL) score (loss on late tokens − loss on early tokens) and the best induction-head
  score: the induction-head *phase change*. By default 75 % of its training sequences end with a copy of an
  earlier span of themselves at a random offset (``RepeatedBatches``); on the corpus as is no induction
  head formed within a CPU budget of ~20 minutes (see ``docs/induction.md``).

``analyze`` (in ``induction_analysis``, importable from here too) turns a run directory into the JSON of
findings (bigram correlation, verified skip-trigrams, copying heads, induction / previous-token heads,
K-composition partners with a random baseline, the phase-change step); ``tour_section`` renders the
pictures for the tour (reusing a finished run if present).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mechscope.errors import ConfigError
from mechscope.io_safety import atomic_write_json
from mechscope.validation import check_types

ICL_EARLY = (40, 50)
"""Token positions averaged for the ICL score's "early" loss (Olsson et al. use token 50)."""
PRINTABLE = (32, 127)
"""Byte range of the random tokens used to probe byte-level models (printable ASCII)."""


@dataclass(frozen=True, kw_only=True)
class InductionConfig:
    """Corpus, model shapes and training schedule of the three models."""

    corpus: str = "stdlib-source"
    """Corpus name or path (see ``mechscope.data.corpus``)."""
    tokenizer: str = "smollm2"
    """``smollm2`` (SmolLM2 BPE; with ``vocab_size`` 2048 as fast per token as bytes) or ``bytes`` (vocab 257)."""
    vocab_size: int | None = 2048
    """Keep only the most frequent ``vocab_size − 1`` tokens (+ one OOV id), e.g. 4096 for ``smollm2``;
    None keeps the tokenizer's whole vocabulary."""
    n_ctx: int = 256
    """Context length of every model."""
    d_model: int = 256
    """Residual width."""
    n_heads: int = 8
    """Heads per layer."""
    d_head: int = 32
    """Per-head dimension."""
    positional: str = "learned"
    """``learned`` absolute embeddings (the weights read exactly as circuits), ``rotary`` (relative
    positions; QK/composition scores then see content only), or ``shortformer`` (learned positions added to
    the query/key inputs only, as in TransformerLens's attn-only models: positions steer attention without
    occupying the residual stream)."""
    pos_init: str = "sinusoidal"
    """Initial learned positions (``learned``/``shortformer``): ``normal`` (random, like every other weight)
    or ``sinusoidal`` (Vaswani et al.'s table at the same scale, then trained): with random rows a
    previous-token head needs "one position back" as a rank-``d_head`` map of ``n_ctx`` random vectors, which
    stops being representable once ``n_ctx`` > ``d_model``; a sinusoidal table makes it one rotation."""
    norm: str = "layernorm"
    """``none`` (logits are exactly a sum of paths) or ``layernorm`` (pre-norm: attention logits start
    large enough for positional heads to form quickly; weight analyses fold only the norm's gain)."""
    batch_size: int = 32
    """Sequences per update."""
    steps: int = 2500
    """Updates of the two-layer model (at most: see ``stop_at_induction``)."""
    stop_at_induction: float | None = None
    """Stop the two-layer model early once its best induction score is >= this at ``plateau_evals``
    consecutive evaluations that differ by < 0.03 (formed and plateaued); None trains all ``steps``."""
    plateau_evals: int = 4
    """Consecutive evaluations the plateau test looks at."""
    one_layer_steps: int = 400
    """Updates of the one-layer model."""
    zero_layer_steps: int = 300
    """Updates of the zero-layer model."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warm-up, then constant)."""
    warmup_steps: int = 100
    """Warm-up updates."""
    eval_every: int = 50
    """Evaluate ICL and induction scores of the two-layer model every N updates."""
    checkpoint_every: int = 50
    """Keep a weights checkpoint every N updates (for the phase-change analysis)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    repeat_frac: float = 0.75
    """Fraction of each two-layer batch's sequences that end with a copy of an earlier span of themselves
    (real text, copied at a random offset; see ``RepeatedBatches``): a curriculum that makes in-context
    copying pay from the first steps. 0 trains on the corpus as is."""
    precision: str = "float32"
    """``float32`` or ``bfloat16`` (autocast forward/backward, float32 weights and optimiser; faster on a CPU
    with AMX: the default shape on 2 threads 0.380 → 0.274 s per update, ``benchmarks/train_step.py``)."""
    val_sequences: int = 64
    """Validation sequences for the loss and ICL score at each evaluation."""
    seed: int = 0
    """Seeds weights, batches and the corpus split."""

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("n_ctx", "d_model", "n_heads", "d_head", "batch_size", "steps", "one_layer_steps",
                     "zero_layer_steps", "eval_every", "checkpoint_every", "plateau_evals"):
            if getattr(self, name) < 1:
                raise ConfigError(f"InductionConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_ctx <= ICL_EARLY[1] + 10:
            raise ConfigError(f"InductionConfig.n_ctx must be > {ICL_EARLY[1] + 10} for the ICL score, got {self.n_ctx}")
        if self.vocab_size is not None and self.vocab_size < 64:
            raise ConfigError(f"InductionConfig.vocab_size must be >= 64 or None, got {self.vocab_size}")
        if self.tokenizer not in ("bytes", "smollm2"):
            raise ConfigError(f"InductionConfig.tokenizer must be 'bytes' or 'smollm2', got {self.tokenizer!r}")
        if self.positional not in ("learned", "rotary", "shortformer"):
            raise ConfigError(f"InductionConfig.positional must be 'learned', 'rotary' or 'shortformer', "
                              f"got {self.positional!r}")
        if self.pos_init not in ("normal", "sinusoidal"):
            raise ConfigError(f"InductionConfig.pos_init must be 'normal' or 'sinusoidal', got {self.pos_init!r}")
        if self.pos_init == "sinusoidal" and self.d_model % 2:
            raise ConfigError(f"InductionConfig.pos_init 'sinusoidal' needs an even d_model, got {self.d_model}")
        if self.norm not in ("none", "layernorm"):
            raise ConfigError(f"InductionConfig.norm must be 'none' or 'layernorm', got {self.norm!r}")
        if self.lr <= 0:
            raise ConfigError(f"InductionConfig.lr must be > 0, got {self.lr}")
        if self.stop_at_induction is not None and not 0 < self.stop_at_induction <= 1:
            raise ConfigError(f"InductionConfig.stop_at_induction must be in (0, 1] or None, got {self.stop_at_induction}")
        if self.weight_decay < 0:
            raise ConfigError(f"InductionConfig.weight_decay must be >= 0, got {self.weight_decay}")
        if self.precision not in ("float32", "bfloat16"):
            raise ConfigError(f"InductionConfig.precision must be 'float32' or 'bfloat16', got {self.precision!r}")
        if self.val_sequences < 1:
            raise ConfigError(f"InductionConfig.val_sequences must be >= 1, got {self.val_sequences}")
        if not 0.0 <= self.repeat_frac <= 1.0:
            raise ConfigError(f"InductionConfig.repeat_frac must be in [0, 1], got {self.repeat_frac}")


def model_config(cfg: InductionConfig, n_layers: int, d_vocab: int) -> Any:
    """An attention-only, norm-free ``ModelConfig`` (``cfg.positional``; none for the zero-layer model)."""
    from mechscope.models.config import AttentionConfig, ModelConfig, NormConfig, PositionalConfig

    return ModelConfig(d_model=cfg.d_model, n_layers=max(n_layers, 1), d_vocab=d_vocab, n_ctx=cfg.n_ctx,
                       attention=AttentionConfig(n_heads=cfg.n_heads, d_head=cfg.d_head), mlp=None,
                       norm=NormConfig(kind=cfg.norm if n_layers else "none"),  # type: ignore[arg-type]
                       positional=PositionalConfig(kind=cfg.positional if n_layers else "none"),  # type: ignore[arg-type]
                       name=f"attn-only-{n_layers}l", architecture="toy")


def _corpus(cfg: InductionConfig) -> Any:
    """The corpus (restricted to ``cfg.vocab_size`` if set) and the tokenizer view that decodes its ids."""
    from mechscope.data.corpus import CorpusConfig, load_corpus, load_tokenizer
    from mechscope.data.vocab import VocabView, restrict_vocab

    corpus = load_corpus(CorpusConfig(source=cfg.corpus, tokenizer=cfg.tokenizer, seed=cfg.seed))  # type: ignore[arg-type]
    tok = load_tokenizer(cfg.tokenizer)  # type: ignore[arg-type]
    if cfg.vocab_size is not None and cfg.vocab_size < corpus.d_vocab:
        corpus, kept = restrict_vocab(corpus, cfg.vocab_size)
        tok = VocabView(tok, kept)
    return corpus, tok


def per_position_loss(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss at each position [seq_len-1] over a batch of sequences [batch seq_len]."""
    logits = model(tokens[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")
    return loss.view(tokens.shape[0], -1).mean(0)


def icl_score(losses: torch.Tensor) -> float:
    """Loss on the last 10% of positions minus the loss at positions ``ICL_EARLY`` (negative = in-context learning)."""
    late = losses[-max(len(losses) // 10, 1):].mean()
    return float(late - losses[ICL_EARLY[0]:ICL_EARLY[1]].mean())


def probe_range(tokenizer: str, d_vocab: int) -> tuple[int, int]:
    """Token ids used for the repeated-random-token probe (printable bytes, or ordinary BPE ids)."""
    return PRINTABLE if tokenizer == "bytes" else (16, d_vocab - 1)  # skip the commonest ids and OOV


class RepeatedBatches:
    """A corpus batch source whose first ``round(frac · batch)`` rows end with a copy of an earlier span.

    Row ``x_0 … x_n`` keeps a prefix of ``k`` tokens (``k`` uniform in [(n+1)/2, 3(n+1)/4]) and continues
    with ``x_s … x_{s+n-k}`` (``s`` uniform, so the copy lies inside the prefix): real text whose second part
    rewards copying from context. The offset between a token and its copy varies from row to row, so no
    fixed-position head can exploit it (only an induction mechanism can). Draws are seeded by the call
    count, which is saved with the wrapped source's state, so resuming stays exact.
    """

    def __init__(self, base: Any, frac: float, seed: int = 0) -> None:
        self.base, self.frac, self.seed, self.calls = base, frac, seed, 0

    def next_batch(self) -> torch.Tensor:
        """Tokens [batch seq_len+1] of the next update."""
        batch = self.base.next_batch()
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        n_rep, length = round(self.frac * batch.shape[0]), batch.shape[1]
        if not n_rep:
            return batch
        k = torch.randint((length + 1) // 2, 3 * length // 4 + 1, (n_rep,), generator=gen)  # prefix kept
        start = (torch.rand(n_rep, generator=gen) * (2 * k - length + 1)).long()  # copy source in [0, 2k-length]
        pos = torch.arange(length)
        src = torch.where(pos < k[:, None], pos, pos - k[:, None] + start[:, None])  # [n_rep length]
        return torch.cat([batch[:n_rep].gather(1, src), batch[n_rep:]])

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The wrapped source's state plus the call count."""
        meta, tensors = self.base.state()
        return {**meta, "repeat_calls": self.calls}, tensors

    def load_state(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Restore the wrapped source's state and the call count."""
        self.calls = int(meta.get("repeat_calls", 0))
        self.base.load_state({k: v for k, v in meta.items() if k != "repeat_calls"}, tensors)


def _lm_loss(model: Any, batch: torch.Tensor) -> torch.Tensor:
    logits = model(batch[:, :-1])
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())


def _zero_layer_loss(model: Any, batch: torch.Tensor) -> torch.Tensor:
    """Loss of the direct path only: embed → unembed (equal to the full forward, whose W_O is frozen at 0)."""
    logits = model.unembed(model.embed(batch[:, :-1]))
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())


def _evaluator(cfg: InductionConfig, val_tokens: torch.Tensor, d_vocab: int) -> Any:
    from mechscope.analysis.heads import detect_heads

    lo, hi = probe_range(cfg.tokenizer, d_vocab)

    def evaluate(model: Any, step: int) -> dict[str, float]:
        losses = per_position_loss(model, val_tokens)
        out = {"val_loss": float(losses.mean()), "icl_score": icl_score(losses)}
        if model.cfg.n_layers >= 2 or model.cfg.positional.kind != "none":
            scores = detect_heads(model, half_len=min(50, (cfg.n_ctx - 1) // 2), batch=4, seed=1,
                                  token_range=(lo, hi))
            out["induction_best"] = float(scores.induction[-1].max())
            out["prev_token_best"] = float(scores.previous_token[0].max())
        return out

    return evaluate


def train(cfg: InductionConfig, out_dir: str | Path, *, progress: bool = True, resume: bool = False,
          only: tuple[str, ...] = ("zero_layer", "one_layer", "two_layer")) -> dict[str, Any]:
    """Train the zero-, one- and two-layer models into ``out_dir/<name>`` (resumable); returns a summary."""
    from mechscope.data.corpus import CorpusBatches
    from mechscope.models.transformer import HookedTransformer
    from mechscope.train import TrainConfig
    from mechscope.train import train as run_training

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "induction_config.json", asdict(cfg))
    corpus, _ = _corpus(cfg)
    val = corpus.val.eval_chunks(cfg.val_sequences, cfg.n_ctx + 1)
    plan = {"zero_layer": (0, cfg.zero_layer_steps), "one_layer": (1, cfg.one_layer_steps), "two_layer": (2, cfg.steps)}
    summary: dict[str, Any] = {}
    for name in only:
        n_layers, steps = plan[name]
        run_dir = out / name
        if (run_dir / "checkpoints").is_dir() and not resume and _finished(run_dir, steps):
            summary[name] = "already trained"
            continue
        model = HookedTransformer(model_config(cfg, n_layers, corpus.d_vocab), seed=cfg.seed)
        if cfg.pos_init == "sinusoidal" and model.cfg.positional.kind in ("learned", "shortformer"):
            _sinusoidal_positions(model)
        if n_layers == 0:
            for layer in range(model.cfg.n_layers):
                w_o = model.get_parameter(f"blocks.{layer}.attn.W_O")
                w_o.data.zero_()
                w_o.requires_grad_(False)
        data = CorpusBatches(corpus.train, cfg.batch_size, cfg.n_ctx, seed=cfg.seed)
        tcfg = TrainConfig(steps=steps, lr=cfg.lr, warmup_steps=cfg.warmup_steps, seed=cfg.seed, progress=progress,
                           weight_decay=cfg.weight_decay,
                           eval_every=cfg.eval_every if n_layers == 2 else steps,
                           checkpoint_every=cfg.checkpoint_every if n_layers == 2 else None,
                           keep_optimizer_state=2, log_every=10, precision=cfg.precision)  # type: ignore[arg-type]
        res = run_training(model, _zero_layer_loss if n_layers == 0 else _lm_loss,
                           RepeatedBatches(data, cfg.repeat_frac, cfg.seed) if n_layers == 2 else data, tcfg, run_dir,
                           callbacks=[_evaluator(cfg, val, corpus.d_vocab)], experiment="induction",
                           run_config={"model": model.cfg.to_dict(), "induction": _identity(cfg), "name": name},
                           resume=resume and ((run_dir / "checkpoints").is_dir() or (run_dir / "run.json").is_file()),
                           stop=_plateau_stop(cfg) if n_layers == 2 else None)
        model.save(run_dir / "final")
        summary[name] = {"steps": res.step, "wall_seconds": round(res.wall_seconds, 1), **res.last}
    return summary


def _sinusoidal_positions(model: Any) -> None:
    """Overwrite ``W_pos`` with the sinusoidal table, scaled to the same per-entry RMS as the random init."""
    from mechscope.models.components.embed import sinusoidal_table
    from mechscope.models.transformer import init_std

    d_model = model.cfg.d_model
    with torch.no_grad():
        model.W_pos.copy_(sinusoidal_table(model.cfg.n_ctx, d_model) * (init_std(d_model) * math.sqrt(2)))


def _plateau_stop(cfg: InductionConfig) -> Any:
    """``stop(record)`` for the trainer: True once the induction score has formed and plateaued."""
    seen: list[float] = []

    def stop(record: dict[str, Any]) -> bool:
        if cfg.stop_at_induction is None or "induction_best" not in record:
            return False
        seen.append(float(record["induction_best"]))
        last = seen[-cfg.plateau_evals:]
        return (len(last) == cfg.plateau_evals and min(last) >= cfg.stop_at_induction
                and max(last) - min(last) < 0.03)

    return stop


LEGACY_DEFAULTS: dict[str, Any] = {"pos_init": "normal"}
"""Settings added after runs were already recorded, with the value those older runs used. A saved config
missing one reads back with this value (``induction_analysis.load_config``), and the value is left out of
a run's identity (``_identity``) so such runs still resume."""


def _identity(cfg: InductionConfig) -> dict[str, Any]:
    """The settings a resumed run must share (step counts, the early stop and the precision may change;
    ``LEGACY_DEFAULTS`` at their old value are left out)."""
    return {k: v for k, v in asdict(cfg).items()
            if not k.endswith("steps") and k not in ("stop_at_induction", "plateau_evals", "precision")
            and not (k in LEGACY_DEFAULTS and v == LEGACY_DEFAULTS[k])}


def _finished(run_dir: Path, steps: int) -> bool:
    from mechscope.train import list_checkpoints

    ck = list_checkpoints(run_dir)
    return bool(ck) and ck[-1][0] >= steps and (run_dir / "final" / "model.safetensors").is_file()



_ANALYSIS = ("load_config", "halfway_step", "phase_curve", "analyze", "public", "find_run", "tour_section")


def __getattr__(name: str) -> Any:
    """The analysis and tour functions live in ``induction_analysis``; still importable from here."""
    if name in _ANALYSIS:
        from mechscope.experiments import induction_analysis

        return getattr(induction_analysis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
