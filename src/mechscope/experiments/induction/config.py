"""Induction heads on real text (Elhage et al. 2021; Olsson et al. 2022), end to end on a CPU.

``train`` fits three attention-only models (no MLP, so the weights read as circuits; LayerNorm by default,
``norm="none"`` makes them exact) on a real corpus (default: the Python standard library's source in
SmolLM2's 2047 commonest BPE tokens + OOV):

* ``zero_layer``: embed → unembed, a bigram table; ``W_E W_U`` should match the corpus's bigram statistics;
* ``one_layer``: one attention layer; its QK/OV circuits are skip-trigram tables "A … B → C";
* ``two_layer``: two attention layers, evaluated every ``eval_every`` steps while it trains: the
  in-context-learning (ICL) score (loss on late tokens − loss on early tokens) and the best induction-head
  score: the induction-head *phase change*. By default every training sequence of its first 2500 updates
  ends with a copy of an earlier span of itself at a random offset (``RepeatedBatches``), then 500 updates
  cool down at 25 % copies; on the corpus as is no induction head formed within a CPU budget of ~20 minutes,
  and with fewer copies the previous-token partner stayed blurred in some seeds (see ``docs/induction.md``).

The case study (``mechscope.experiments.induction``) has four modules, each importing only those before it:
``config`` (this: ``InductionConfig``, the model shapes it defines, reading a run's saved config), ``run``
(``train``), ``analysis`` (``analyze``: bigram correlation, verified skip-trigrams, copying heads, induction /
previous-token heads, K-composition partners with a random baseline, the phase-change step) and ``report``
(pictures, the tour section, reusing a finished run if present).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mechscope.errors import ConfigError
from mechscope.io_safety import read_json_object
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
    steps: int = 3000
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
    repeat_frac: float = 1.0
    """Fraction of each two-layer batch's sequences that end with a copy of an earlier span of themselves
    (real text, copied at a random offset; see ``RepeatedBatches``): a curriculum that makes in-context
    copying pay from the first steps. 0 trains on the corpus as is."""
    curriculum_steps: int | None = 2500
    """Updates that read ``repeat_frac`` copies; the rest of ``steps`` are a cool-down at
    ``cooldown_repeat_frac``, so the model stops expecting a copy where nothing repeats (the all-copy
    curriculum alone leaves late tokens of natural text predicted worse than early ones). None: copies to the end."""
    cooldown_repeat_frac: float = 0.25
    """``repeat_frac`` after ``curriculum_steps`` (0: the corpus as is)."""
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
        if self.curriculum_steps is not None and self.curriculum_steps < 1:
            raise ConfigError(f"InductionConfig.curriculum_steps must be >= 1 or None, got {self.curriculum_steps}")
        if not 0.0 <= self.cooldown_repeat_frac <= 1.0:
            raise ConfigError(f"InductionConfig.cooldown_repeat_frac must be in [0, 1], got {self.cooldown_repeat_frac}")
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


def cooldown_start(cfg: InductionConfig) -> int | None:
    """The update after which the two-layer model cools down (``curriculum_steps``), None when it never does."""
    end = cfg.curriculum_steps
    return end if end is not None and end < cfg.steps else None


def probe_range(tokenizer: str, d_vocab: int) -> tuple[int, int]:
    """Token ids used for the repeated-random-token probe (printable bytes, or ordinary BPE ids)."""
    return PRINTABLE if tokenizer == "bytes" else (16, d_vocab - 1)  # skip the commonest ids and OOV


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
missing one reads back with this value (``load_config``), and the value is left out of
a run's identity (``_identity``) so such runs still resume."""


def _identity(cfg: InductionConfig) -> dict[str, Any]:
    """The settings a resumed run must share (step counts, the cool-down, the early stop and the precision may
    change: a finished run can be continued with a cool-down; ``LEGACY_DEFAULTS`` at their old value are left out)."""
    return {k: v for k, v in asdict(cfg).items()
            if not k.endswith("steps") and k != "cooldown_repeat_frac"
            and k not in ("stop_at_induction", "plateau_evals", "precision")
            and not (k in LEGACY_DEFAULTS and v == LEGACY_DEFAULTS[k])}



def load_config(out_dir: str | Path) -> InductionConfig:
    """The ``InductionConfig`` a run directory was trained with."""
    p = Path(out_dir) / "induction_config.json"
    if not p.is_file():
        raise ConfigError(f"{p} is missing: {out_dir} is not an induction run (make one with "
                          "`mechscope induction train --out DIR`)")
    from mechscope.validation import build

    stored = read_json_object(p, ConfigError)
    return build(InductionConfig, {**LEGACY_DEFAULTS, **stored}, f"{p}: ")
