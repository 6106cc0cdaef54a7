"""Pictures and report sections of the induction experiment, and its tour section.

``figures`` turns an ``analyze`` result into PNGs (phase change, composition heatmaps, head scores, bigram
scatter) plus an interactive attention page; ``smollm2_heads`` ranks a real model's heads with the same
detectors and renders its top induction heads on a repeated random sequence; ``tour_section`` shows a
finished run (``find_run``) and SmolLM2's heads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mechscope.experiments.induction.analysis import analyze
from mechscope.viz.report import save_figure, table_html


def figures(result: dict[str, Any], img_dir: str | Path) -> dict[str, Path]:
    """Save the pictures an ``analyze`` result supports into ``img_dir``; returns name -> path."""
    from mechscope.analysis.weights import bigram_logits, empirical_bigram_logprobs
    from mechscope.viz.plots import heatmap, phase_change_plot, scatter

    out, paths = Path(img_dir), {}
    if "_curve" in result:
        c = result["_curve"]
        frac = result.get("config", {}).get("cooldown_repeat_frac", 0)
        fig = phase_change_plot(c["step"], c["icl_score"], c["induction_best"], marker=result.get("phase_change_step"),
                                shade_from=result.get("_cooldown_from"), shade_label=f"cool-down: {frac:.0%} copies")
        paths["phase_change"] = save_figure(fig, out / "phase_change.png")
    if "_scores" in result:
        s = result["_scores"]
        base = result["composition_baseline"]
        for kind in ("k", "q", "v"):
            fig = heatmap(s[kind], title=f"{kind.upper()}-composition, layer 0 → layer 1 (random baseline {base:.3f})",
                          xlabel="layer-1 head", ylabel="layer-0 head", vmin=0)
            paths[f"{kind}_composition"] = save_figure(fig, out / f"{kind}_composition.png")
        if "key_path" in s:
            fig = heatmap(s["key_path"], title="causal K-composition: induction score lost when a\nlayer-0 head is "
                          "removed from a layer-1 head's key input", xlabel="layer-1 head", ylabel="layer-0 head")
            paths["key_path"] = save_figure(fig, out / "key_path.png")
        both = torch.stack([s["prev"][0], s["induction"][1]])
        fig = heatmap(both, title="previous-token score (layer 0) / induction score (layer 1)", xlabel="head",
                      yticklabels=["L0 prev-token", "L1 induction"], vmin=0, vmax=1)
        paths["head_scores"] = save_figure(fig, out / "head_scores.png")
    if "_bigram" in result:
        m0, counts = result["_bigram"]
        keep = torch.as_tensor(counts) >= 10
        model_lp = torch.log_softmax(bigram_logits(m0).double(), -1)[keep]
        emp = empirical_bigram_logprobs(counts)[keep]
        fig = scatter(emp, model_lp, title=f"bigrams seen ≥ 10 times (r = {result['bigram_corr']:.3f})",
                      xlabel="corpus log P(b|a)", ylabel="zero-layer model log P(b|a)", diagonal=True)
        paths["bigrams"] = save_figure(fig, out / "bigrams.png")
    if "_two_layer" in result and "induction_heads" in result:
        paths["attention"] = _two_layer_attention(result, out / "attention.html")
    return paths


def _two_layer_attention(result: dict[str, Any], path: Path) -> Path:
    """Attention page of the trained model's best induction head and the layer-0 head its key depends on most."""
    from mechscope.analysis.heads import repeated_tokens
    from mechscope.viz.attention import attention_page

    model, tok, text = result["_two_layer"]
    best = result["best_induction_head"]
    heads = [(0, int(best.get("causal_partner", best["k_partner"])[1])), (1, int(best["head"]))]
    lo, hi = (32, 127) if model.cfg.d_vocab == 257 else (16, model.cfg.d_vocab - 1)
    rnd = repeated_tokens(model.cfg.d_vocab, min(24, model.cfg.n_ctx // 2), batch=1, seed=3, low=lo, high=hi)[0]

    def label(seq: torch.Tensor) -> list[str]:
        return [tok.to_string([int(t)]) for t in seq]

    frags = [attention_view(model, rnd, heads, label(rnd), "Random characters repeated twice"),
             attention_view(model, text, heads, label(text), "Held-out text")]
    attention_page(str(path), frags, title="Two-layer model: previous-token head → induction head")
    return path


def attention_view(model: Any, tokens: torch.Tensor, heads: list[tuple[int, int]], labels_tok: list[str],
                   title: str) -> str:
    """Interactive attention HTML of ``heads`` [(layer, head)] on one sequence ``tokens`` [pos]."""
    from mechscope.analysis.heads import attention_patterns
    from mechscope.viz.attention import attention_html

    pats = attention_patterns(model, tokens[None])  # [l 1 h q k]
    chosen = torch.stack([pats[layer, 0, head] for layer, head in heads])
    return attention_html(labels_tok, chosen, labels=[f"L{layer}.H{head}" for layer, head in heads], title=title)


def smollm2_heads(model: Any, half_len: int = 40, batch: int = 4, k: int = 8) -> dict[str, Any]:
    """Ranked induction / previous-token / duplicate-token heads of a real model (repeated random tokens)."""
    from mechscope.analysis.heads import detect_heads, rank_heads

    hs = detect_heads(model, half_len=half_len, batch=batch, seed=0)
    return {"induction_heads": rank_heads(hs.induction, k), "prev_token_heads": rank_heads(hs.previous_token, k),
            "duplicate_token_heads": rank_heads(hs.duplicate_token, k), "chance": hs.chance,
            "n_heads_induction_over_0.3": int((hs.induction > 0.3).sum()), "_scores": hs}


def smollm2_view(model: Any, ranked: dict[str, Any], half_len: int = 20) -> str:
    """Attention view of SmolLM2's top 3 induction heads and top previous-token head on a repeated sequence."""
    from mechscope.analysis.heads import repeated_tokens

    tok = model.tokenizer
    bos = getattr(tok, "bos_token_id", None)
    seq = repeated_tokens(model.cfg.d_vocab, half_len, batch=1, seed=7, bos=bos, low=3)[0]
    labels = tok.to_str_tokens(seq) if tok is not None else [str(int(t)) for t in seq]
    heads = [(int(r[0]), int(r[1])) for r in ranked["induction_heads"][:3]]
    heads.append((int(ranked["prev_token_heads"][0][0]), int(ranked["prev_token_heads"][0][1])))
    return attention_view(model, seq, heads, labels, "SmolLM2 on a random sequence repeated twice "
                          "(hover a token in the second half)")


def summary_html(result: dict[str, Any], images: dict[str, Path] | None = None) -> str:
    """HTML body for an ``analyze`` result: headline numbers, tables, embedded pictures."""
    parts = []
    head: dict[str, Any] = {k: result[k] for k in ("bigram_corr", "icl_score_final", "icl_score_before_cooldown",
                                                   "induction_score_final", "phase_change_step", "icl_halfway_step",
                                                   "skip_trigrams_verified") if k in result}
    if head:
        parts.append(table_html([head]))
    if "circuit" in result:
        c = result["circuit"]
        failed = ", ".join(k for k, ok in c["checks"].items() if not ok)
        parts.append(f"<p><b>Induction head fed by a previous-token head: {'formed' if c['formed'] else 'not formed'}"
                     f"</b>{'' if c['formed'] else f' (failed: {failed})'}; thresholds {c['thresholds']}.</p>")
    if "best_induction_head" in result:
        parts.append(table_html([{k: str(v) for k, v in result["best_induction_head"].items()}]))
    if "skip_trigrams" in result:
        parts.append("<p>Top skip-trigrams of the one-layer model (weights only; logit effect measured by running "
                     "the model with and without A in a filler context):</p>")
        parts.append(table_html([{k: r[k] for k in ("head", "text", "score", "logit_effect")}
                                 for r in result["skip_trigrams"][:10]]))
    for name, path in (images or {}).items():
        if Path(path).suffix == ".png":
            parts.append(f'<p><img alt="{name}" src="data:image/png;base64,{_b64(path)}"/></p>')
        else:
            parts.append(f'<p><a href="{Path(path).parent.name}/{Path(path).name}">{name} (interactive)</a></p>')
    return "".join(parts)


def _b64(path: Path) -> str:
    import base64

    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def find_run(out_dir: Path) -> Path | None:
    """A finished run to reuse: ``out_dir/induction-run``, then ``$MECHSCOPE_INDUCTION_RUN``."""
    import os

    for cand in (out_dir / "induction-run", os.environ.get("MECHSCOPE_INDUCTION_RUN")):
        if cand and (Path(cand) / "two_layer" / "final" / "model.safetensors").is_file():
            return Path(cand)
    return None


def tour_section(out_dir: Path, model: Any = None) -> Any:
    """The tour's induction section: a finished run's findings (if one exists) and SmolLM2's induction heads.

    Training is not done here (it takes minutes); the section says how to make a run and reuses it after.
    """
    from mechscope.viz.report import Section, esc


    parts, notes = [], []
    run = find_run(Path(out_dir))
    if run is not None:
        result = analyze(run)
        images = figures(result, Path(out_dir) / "induction")
        parts.append(f"<p>Run <code>{esc(run)}</code>: attention-only models on {esc(result['config']['corpus'])} "
                     f"({esc(result['config']['tokenizer'])}).</p>" + summary_html(result, images))
    else:
        notes.append("No finished induction run found: make one with `mechscope induction train --out "
                     f"{Path(out_dir) / 'induction-run'} --precision bfloat16` (3000 updates, ≈ 16 min on 2 quiet cores) "
                     "and rerun the tour.")
    if model is not None:
        ranked = smollm2_heads(model)
        rows = [{"detector": k.replace("_heads", ""), "top heads": ", ".join(f"L{r[0]}.H{r[1]} {r[2]:.2f}"
                                                                           for r in ranked[k][:5])}
                for k in ("induction_heads", "prev_token_heads", "duplicate_token_heads")]
        parts.append("<h3>Heads of the real model (random tokens repeated twice)</h3>" + table_html(rows))
        parts.append(smollm2_view(model, ranked))
        notes.append(f"Chance levels (uniform attention): {ranked['chance']}")
    return Section(title="Induction heads", body="".join(parts), anchor="induction", notes=notes)


__all__ = ["attention_view", "figures", "find_run", "smollm2_heads", "smollm2_view", "summary_html", "tour_section"]
