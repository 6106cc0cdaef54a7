"""Training the zero-, one- and two-layer attention-only models of the induction study (resumable).

``train(cfg, out_dir)`` fits each model through ``mechscope.train`` into ``out_dir/<name>``; the two-layer
model is evaluated while it trains (ICL score, best induction / previous-token head) and, by default,
reads batches where 75 % of the rows end with a copy of an earlier span (``RepeatedBatches``).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mechscope.experiments.induction.config import (
    ICL_EARLY,
    InductionConfig,
    _identity,
    _plateau_stop,
    model_config,
    probe_range,
)
from mechscope.io_safety import atomic_write_json


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


class RepeatedBatches:
    """A corpus batch source whose first ``round(frac · batch)`` rows end with a copy of an earlier span.

    Row ``x_0 … x_n`` keeps a prefix of ``k`` tokens (``k`` uniform in [(n+1)/2, 3(n+1)/4]) and continues
    with ``x_s … x_{s+n-k}`` (``s`` uniform, so the copy lies inside the prefix): real text whose second part
    rewards copying from context. The offset between a token and its copy varies from row to row, so no
    fixed-position head can exploit it (only an induction mechanism can). Draws are seeded by the call
    count, which is saved with the wrapped source's state, so resuming stays exact. With ``until`` = U the
    batches after the first U copy only ``after`` of their rows (the cool-down; 0 = the corpus as is).
    """

    def __init__(self, base: Any, frac: float, seed: int = 0, until: int | None = None, after: float = 0.0) -> None:
        self.base, self.frac, self.seed, self.until, self.after, self.calls = base, frac, seed, until, after, 0

    def next_batch(self) -> torch.Tensor:
        """Tokens [batch seq_len+1] of the next update."""
        batch = self.base.next_batch()
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        frac = self.frac if self.until is None or self.calls <= self.until else self.after
        n_rep, length = round(frac * batch.shape[0]), batch.shape[1]
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
                           RepeatedBatches(data, cfg.repeat_frac, cfg.seed, until=cfg.curriculum_steps,
                                           after=cfg.cooldown_repeat_frac)
                           if n_layers == 2 else data, tcfg, run_dir,
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


def _finished(run_dir: Path, steps: int) -> bool:
    from mechscope.train import list_checkpoints

    ck = list_checkpoints(run_dir)
    return bool(ck) and ck[-1][0] >= steps and (run_dir / "final" / "model.safetensors").is_file()
