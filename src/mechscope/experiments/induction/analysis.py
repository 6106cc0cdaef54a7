"""Analysis of an induction run directory (the training side is ``run``, the pictures ``report``).

``analyze(out_dir)`` turns a run made by ``train`` into the JSON of findings (bigram correlation, verified
skip-trigrams, copying heads, induction / previous-token heads, K-composition partners with a random
baseline, the phase-change step); ``public`` drops the tensors kept for the pictures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mechscope.experiments.induction.config import InductionConfig, cooldown_start, load_config, probe_range
from mechscope.experiments.induction.run import _corpus


def _load(out: Path, name: str) -> Any:
    """The final model of ``out/name``, else its latest checkpoint (an interrupted run), else None."""
    from mechscope.models.config import ModelConfig
    from mechscope.models.transformer import HookedTransformer
    from mechscope.train import latest_checkpoint, load_weights

    final = out / name / "final"
    if (final / "model.safetensors").is_file():
        return HookedTransformer.load(final).eval()
    if latest_checkpoint(out / name) is None:
        return None
    run_cfg = json.loads((out / name / "run.json").read_text())["run_config"]
    model = HookedTransformer(ModelConfig.from_dict(run_cfg["model"]))
    load_weights(model, out / name, experiment="induction")
    return model.eval()


def halfway_step(steps: Sequence[float], values: Sequence[float], min_change: float = 0.0) -> int | None:
    """First step at which ``values`` has covered half of its way from the start to its end value.

    Robust to noise because the end is the mean of the last 3 values. None when the curve moved less
    than ``min_change`` overall (no phase change to locate).
    """
    if len(values) < 3:
        return None
    start, end = values[0], sum(values[-3:]) / 3
    if abs(end - start) < min_change:
        return None
    mid = (start + end) / 2
    for s, v in zip(steps, values):
        if (end >= start and v >= mid) or (end < start and v <= mid):
            return int(s)
    return None


def phase_curve(out_dir: str | Path) -> dict[str, list[float]]:
    """The two-layer model's evaluation records: step, val_loss, icl_score, induction_best, prev_token_best."""
    from mechscope.train import read_metrics

    recs = [r for r in read_metrics(Path(out_dir) / "two_layer") if "induction_best" in r]
    keys = ("step", "val_loss", "icl_score", "induction_best", "prev_token_best")
    return {k: [r[k] for r in recs] for k in keys}


def _token_str(tok: Any, i: int) -> str:
    """A token's text, or its vocabulary spelling (``<0xE2>``) when it is not valid UTF-8 on its own."""
    text = tok.to_string([i])
    return tok.to_pieces([i])[0] if "\ufffd" in text else text


def _bigram_section(m0: Any, counts: Any) -> dict[str, Any]:
    from mechscope.analysis.weights import bigram_correlation, bigram_logits

    return {"bigram_corr": round(bigram_correlation(bigram_logits(m0), counts, min_count=10), 4),
            "bigram_pairs": int((counts >= 10).sum())}


def _trigram_section(m1: Any, tok: Any, filler: int, sep: int) -> dict[str, Any]:
    from mechscope.analysis.heads import rank_heads
    from mechscope.analysis.weights import copying_scores, skip_trigrams, verify_skip_trigrams

    cand = None if m1.cfg.d_vocab <= 1024 else torch.arange(1024)  # restricted vocabularies are frequency-ordered
    tri = skip_trigrams(m1, k=20, exclude=(sep, m1.cfg.d_vocab - 1) if cand is not None else (sep,), candidates=cand,
                        per_source=1)
    with torch.inference_mode():
        eff = verify_skip_trigrams(m1, tri, filler=filler, length=32)
    rows = [{"head": t.head, "a": t.a, "b": t.b, "c": t.c,
             "text": f"{_token_str(tok, t.a)!r} … {_token_str(tok, t.b)!r} → {_token_str(tok, t.c)!r}",
             "score": round(t.score, 4), "ov": round(t.ov, 3), "logit_effect": round(float(e), 3)}
            for t, e in zip(tri, eff)]
    cs = copying_scores(m1)
    return {"skip_trigrams": rows, "skip_trigrams_verified": int((eff > 0).sum()),
            "copying_heads": rank_heads(cs.eig_ratio, m1.cfg.n_heads)}


FORMED_INDUCTION = 0.5
"""A layer-1 head "is an induction head" at this induction score (8 × 100 random tokens repeated; chance ≈ 0.01)."""
FORMED_PREV_TOKEN = 0.5
"""Its partner "is a previous-token head" when at least half of its attention goes one token back."""
FORMED_KEY_SHARE = 0.5
"""The induction head "is fed by" the partner when removing the partner from its key input alone takes away at
least this share of its induction score."""


def circuit_verdict(best: dict[str, Any]) -> dict[str, Any]:
    """Did the two-layer model form an induction head fed by a previous-token head? The criteria, each checked.

    "Fed by" is tested causally: the partner is the layer-0 head whose removal from the induction head's key
    input lowers its induction score most (``analysis.key_paths``); the weight-based K-composition rank of that
    head is reported beside it, not required (the weight score is a proxy that can rank a head first that the
    key does not depend on).
    """
    checks = {"induction_head": best["induction"] >= FORMED_INDUCTION,
              "partner_is_previous_token_head": best["causal_partner_prev_token"] >= FORMED_PREV_TOKEN,
              "key_fed_by_partner": best["causal_partner_share"] >= FORMED_KEY_SHARE}
    return {"formed": all(checks.values()), "checks": checks,
            "thresholds": {"induction": FORMED_INDUCTION, "prev_token": FORMED_PREV_TOKEN,
                           "key_share": FORMED_KEY_SHARE}}


def _two_layer_section(m2: Any, cfg: InductionConfig, d_vocab: int) -> dict[str, Any]:
    from mechscope.analysis.heads import detect_heads, detector_targets, rank_heads, repeated_tokens
    from mechscope.analysis.key_paths import key_path_effects
    from mechscope.analysis.weights import composition_scores

    lo, hi = probe_range(cfg.tokenizer, d_vocab)
    tokens = repeated_tokens(d_vocab, min(100, (cfg.n_ctx - 1) // 2), 8, seed=2, low=lo, high=hi)
    hs = detect_heads(m2, tokens)
    target = detector_targets(tokens)["induction"]  # the target detect_heads scored
    drop, _ = key_path_effects(m2, tokens, target, sender_layer=0, receiver_layer=1)  # [l0 head, l1 head]
    comp = composition_scores(m2)
    k01 = comp.k[0, :, 1, :]  # [layer-0 head, layer-1 head]
    order = torch.argsort(k01.flatten(), descending=True)[:8]
    n_h = m2.cfg.n_heads
    best = int(hs.induction[1].argmax())
    partner = int(k01[:, best].argmax())
    causal = int(drop[:, best].argmax())
    ind = float(hs.induction[1, best])

    def k_rank(h: int) -> int:  # rank of layer-0 head h in the best head's K-composition column
        return int((k01[:, best] > k01[h, best]).sum()) + 1

    best_head = {"layer": 1, "head": best, "induction": round(ind, 4),
                 "k_partner": [0, partner], "k_score": round(float(k01[partner, best]), 4),
                 "k_partner_rank_in_column": k_rank(partner),
                 "partner_prev_token": round(float(hs.previous_token[0, partner]), 4),
                 "causal_partner": [0, causal], "causal_partner_drop": round(float(drop[causal, best]), 4),
                 "causal_partner_share": round(float(drop[causal, best]) / max(ind, 1e-9), 4),
                 "causal_partner_prev_token": round(float(hs.previous_token[0, causal]), 4),
                 "causal_partner_k_rank": k_rank(causal),
                 "key_path_drops": [round(float(x), 4) for x in drop[:, best]]}
    return {
        "induction_heads": rank_heads(hs.induction, 8), "prev_token_heads": rank_heads(hs.previous_token, 8),
        "duplicate_token_heads": rank_heads(hs.duplicate_token, 5), "chance": hs.chance,
        "k_composition_top": [[int(i) // n_h, int(i) % n_h, round(float(k01.flatten()[i]), 4),
                               round(comp.baseline, 4)] for i in order],
        "best_induction_head": best_head, "circuit": circuit_verdict(best_head),
        "composition_baseline": round(comp.baseline, 4),
        "_scores": {"induction": hs.induction, "prev": hs.previous_token, "k": k01, "q": comp.q[0, :, 1, :],
                    "v": comp.v[0, :, 1, :], "key_path": drop},
    }


def analyze(out_dir: str | Path) -> dict[str, Any]:
    """All findings of a run directory (JSON-ready except the ``_scores`` tensors, used for pictures)."""
    out = Path(out_dir)
    cfg = load_config(out)
    corpus, tok = _corpus(cfg)
    counts = corpus.train.bigram_counts() if corpus.d_vocab <= 8192 else None  # [V V] int64
    result: dict[str, Any] = {"config": asdict(cfg)}
    m0, m1, m2 = (_load(out, n) for n in ("zero_layer", "one_layer", "two_layer"))
    if m0 is not None and counts is not None:
        result.update(_bigram_section(m0, counts))
        result["_bigram"] = (m0, counts)
    if m1 is not None:
        filler = int(counts.sum(1).argmax()) if counts is not None else 0
        result.update(_trigram_section(m1, tok, filler=filler, sep=corpus.train.separator))
    if m2 is not None:
        result.update(_two_layer_section(m2, cfg, corpus.d_vocab))
        result["_two_layer"] = (m2, tok, corpus.val.eval_chunks(1, min(96, m2.cfg.n_ctx))[0])  # fits the context
    curve = phase_curve(out) if (out / "two_layer" / "metrics.jsonl").is_file() else None
    if curve and curve["step"]:
        result["icl_score_final"] = round(curve["icl_score"][-1], 4)
        result["induction_score_final"] = round(curve["induction_best"][-1], 4)
        result["phase_change_step"] = halfway_step(curve["step"], curve["induction_best"], min_change=0.1)
        end = cooldown_start(cfg)  # the ICL half-way step is read over the curriculum only
        kept = [(s, v) for s, v in zip(curve["step"], curve["icl_score"]) if end is None or s <= end]
        result["icl_halfway_step"] = halfway_step([s for s, _ in kept], [v for _, v in kept])
        if end is not None:
            result["icl_score_before_cooldown"] = round(kept[-1][1], 4) if kept else None
            result["_cooldown_from"] = end
        result["_curve"] = curve
    return result


def public(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` without the private (tensor) entries, ready for ``json.dumps``."""
    return {k: v for k, v in result.items() if not k.startswith("_")}
