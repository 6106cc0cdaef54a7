"""``mechscope tour``: load SmolLM2 and write one self-contained HTML report of what mechscope does.

Core sections (this module): the model and a generation sample; indirect-object identification over
≥ 20 prompts; a logit-lens table; attention patterns of the top induction heads on a repeated random
sequence. Then each case study adds its own section through ``tour_section(out_dir, model)`` in its
experiment module. A section that fails is shown as a failure in the report (and makes the command exit
non-zero) rather than hiding the rest.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from mechscope.viz.report import Section, esc, table_html, write_report

# case-study modules that contribute a `tour_section(out_dir, model=None)`
EXTRA_SECTIONS = [
    "mechscope.experiments.ioi.report",
    "mechscope.experiments.induction.report",
    "mechscope.experiments.grokking.report",
    "mechscope.experiments.superposition.report",
    "mechscope.experiments.dictionaries.report",
]


def _study_name(module: str) -> str:
    """``mechscope.experiments.grokking.report`` -> ``grokking`` (a study's package, not its role module)."""
    parts = module.split(".")
    return parts[-2] if parts[-1] in ("report", "analysis", "run", "config") and len(parts) > 1 else parts[-1]


@dataclass
class TourResult:
    """What ``run_tour`` wrote."""

    path: Path
    seconds: float
    sections: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def section_model(model: Any) -> Section:
    """Model card and greedy generations (KV cache, one padded batch)."""
    from mechscope.models.generate import generate

    prompts = ["Once upon a time, there was a", "The capital of France is", "def fibonacci(n):\n"]
    out = generate(model, prompts, max_new_tokens=24)
    c = model.cfg
    n_params = model.n_params()
    card = (f"<p><b>{esc(c.name)}</b> ({esc(c.architecture)}): {n_params:,} parameters, {c.n_layers} layers, "
            f"d_model {c.d_model}, {c.n_heads} query heads / {c.attention.kv_heads} key-value heads, d_mlp {c.d_mlp}, "
            f"vocab {c.d_vocab}; {len(model.hook_dict)} hook points.</p>")
    rows = [{"prompt": p, "greedy continuation": t} for p, t in zip(prompts, out.texts)]
    return Section("Model and generation", card + table_html(rows))


def _ioi_metric(model: Any, pairs: Any) -> torch.Tensor:
    """logit(IO) − logit(S) at the last position, per prompt."""
    with torch.inference_mode():
        return pairs.metric()(model(pairs.clean)[:, -1]).float()


def section_ioi(model: Any, n_per_template: int = 4) -> Section:
    """Indirect-object identification: logit(IO) − logit(S) over templates × names, ABBA and BABA."""
    from mechscope.data.tasks.ioi import TEMPLATES, ioi_dataset

    datasets = ioi_dataset(model.tokenizer, n_per_template)
    diffs = [_ioi_metric(model, d) for d in datasets]
    all_d = torch.cat(diffs)
    rows = []
    for d, diff in zip(datasets, diffs):
        for i in range(min(2, len(diff))):
            rows.append({"prompt": d.texts[i], "IO": model.tokenizer.to_string([int(d.answer[i])]),
                         "S": model.tokenizer.to_string([int(d.wrong[i])]), "logit diff": float(diff[i])})
    summary = (f"<p>{len(all_d)} prompts from {len(TEMPLATES)} templates (half ABBA, half BABA): mean logit "
               f"difference <b>{float(all_d.mean()):+.2f}</b>, accuracy (IO above S) <b>{float((all_d > 0).float().mean()):.0%}</b>."
               f" Per template: " + ", ".join(f"{float(x.mean()):+.2f}" for x in diffs) + ".</p>")
    return Section("Indirect object identification", summary + table_html(rows))


def section_logit_lens(model: Any) -> Section:
    """Logit lens on a factual prompt: what each layer's residual stream would predict."""
    from mechscope.cache.analysis import logit_lens

    tok = model.tokenizer
    text = "The Eiffel Tower is in the city of"
    tokens = tok.to_tokens(text)
    target = tok.to_single_token(" Paris")
    _, cache = model.run_with_cache(tokens, names=lambda n: "resid" in n)
    lens = logit_lens(cache, model, pos_slice=-1, k=3, target=torch.tensor([target]))
    assert lens.target_probs is not None  # asked for with target=
    rows = []
    for i, label in enumerate(lens.labels):
        top = [tok.to_string([int(t)]) for t in lens.top_tokens[i, 0]]
        rows.append({"residual": label, "top-3 tokens": " | ".join(repr(t) for t in top),
                     "p(top-1)": float(lens.top_probs[i, 0, 0]), "p(' Paris')": float(lens.target_probs[i, 0])})
    return Section("Logit lens", f"<p>Prompt: <code>{esc(text)}</code> — the residual stream before each layer, "
                   "read through the final norm and the unembedding.</p>" + table_html(rows))


def section_induction(model: Any) -> Section:
    """Induction scores on a repeated random sequence; attention patterns of the top heads."""
    from mechscope.analysis.heads import attention_patterns, detect_heads, rank_heads, repeated_tokens
    from mechscope.viz.attention import attention_html

    scores = detect_heads(model, half_len=40, batch=4, seed=0)
    top = rank_heads(scores.induction, k=6)
    seq = repeated_tokens(model.cfg.d_vocab, 20, batch=1, seed=1, low=1000, high=40000)
    pats = attention_patterns(model, seq)  # [layers batch heads q k]
    chosen = [(int(layer), int(head)) for layer, head, _ in top[:4]]
    sel = torch.stack([pats[la, 0, hd] for la, hd in chosen])
    labels = [f"L{layer}.H{head}" for layer, head in chosen]
    html = attention_html(model.tokenizer.to_str_tokens(seq[0]), sel, labels=labels,
                          title="top induction heads on a random sequence repeated twice (hover tokens)")
    table = table_html([{"head": f"L{layer}.H{h}", "induction score": s,
                         "previous-token score": float(scores.previous_token[int(layer), int(h)])} for layer, h, s in top])
    note = (f"<p>Induction score = attention from each token of the second copy to the token after its first "
            f"occurrence (chance {scores.chance['induction']:.3f}).</p>")
    return Section("Induction heads", note + table + html)


CORE: list[tuple[str, Callable[[Any], Section]]] = [
    ("model", section_model), ("ioi", section_ioi), ("logit_lens", section_logit_lens),
    ("induction", section_induction)]


def _failure(title: str, err: BaseException) -> Section:
    tb = "".join(traceback.format_exception_only(type(err), err)).strip()
    return Section(title, f"<p><b>This section failed:</b></p><pre>{esc(tb)}</pre>")


def _extra(modname: str, out_dir: Path, model: Any) -> Section | None:
    if importlib.util.find_spec(modname) is None:
        return None
    mod = importlib.import_module(modname)
    fn = getattr(mod, "tour_section", None)
    if fn is None:
        return None
    params = inspect.signature(fn).parameters
    return fn(out_dir, model=model) if "model" in params else fn(out_dir)


def run_tour(out_dir: str | Path = "out/tour", *, quick: bool = False, model: Any = None,
             extra: list[str] | None = None) -> TourResult:
    """Build the tour report; returns where it is and which sections failed.

    ``extra`` lists the case-study modules to include (default: all of ``EXTRA_SECTIONS``).
    """
    from mechscope.models.loading import load

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    if model is None:
        _log("[tour] loading SmolLM2-135M from the embedded GGUF ...")
        model = load("smollm2-135m").eval()
    result = TourResult(path=out / "index.html", seconds=0.0)
    sections: list[Section] = []
    steps: list[tuple[str, Callable[[], Section | None]]] = [(n, partial(f, model)) for n, f in CORE]
    steps += [("case study: " + _study_name(m), partial(_extra, m, out, model))
              for m in (EXTRA_SECTIONS if extra is None else extra)]
    for i, (name, step) in enumerate(steps, 1):
        _log(f"[tour] ({i}/{len(steps)}) {name} ...")
        ts = time.perf_counter()
        try:
            sec = step()
        except Exception as e:  # a broken section must not hide the rest of the report
            _log(f"[tour]   FAILED: {type(e).__name__}: {e}")
            sec = _failure(name, e)
            result.failed.append(name)
        result.timings[name] = time.perf_counter() - ts
        if sec is not None:
            sections.append(sec)
            result.sections.append(name)
            _log(f"[tour]   done in {result.timings[name]:.1f} s")
    result.seconds = time.perf_counter() - t0
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items())
    write_report(result.path, "mechscope tour", sections,
                 subtitle=f"SmolLM2-135M-Instruct on this CPU; built in {result.seconds:.0f} s ({timing}).")
    return result
