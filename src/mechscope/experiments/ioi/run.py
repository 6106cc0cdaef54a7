"""Case study: indirect object identification and factual recall in SmolLM2, by causal interventions.

Steps (each a function, all numbers measured on the loaded model):

1. behaviour: IOI logit difference ``logit(IO) - logit(S)`` and accuracy over every template;
2. residual-stream patching (layer × position, ABC → clean denoising) and head-output patching (layer × head);
3. direct logit attribution (DLA) of every head at the final position → name-mover candidates (large
   positive DLA *and* large patching effect), negative heads;
4. S-inhibition candidates: path patching from earlier heads into the name movers' *queries* at the end;
5. duplicate-token / induction candidates from attention at S2 (to S1, and to the token after S1);
6. backup heads: mean-ablate the top name movers and measure which later heads' DLA rises;
7. factual recall: residual patching on landmark → city prompts (which layers/positions carry the fact).

``run(config, model)`` writes ``summary.json`` and pictures into ``config.out_dir``; ``tour_section`` reuses a
finished run directory or runs a small configuration.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import ConfigError
from mechscope.hooks.names import act_name
from mechscope.interventions.apply import intervene
from mechscope.interventions.patching import patch_sweep
from mechscope.interventions.path_patching import Receiver, path_patch
from mechscope.interventions.spec import Ablate
from mechscope.io_safety import atomic_write_json
from mechscope.models.components.frozen_norm import frozen_norm, head_contributions, norm_scale
from mechscope.validation import check_types


@dataclass(frozen=True, kw_only=True)
class IOIConfig:
    """What the case study runs."""

    out_dir: str = "runs/ioi"
    """Where summary.json and the pictures go."""
    n_per_template: int = 16
    """Prompts per template for accuracy and logit difference."""
    n_patch: int = 8
    """Prompts (one template, ABBA) in the patching batch."""
    template: int = 0
    """Template index of the patching batch."""
    top_k: int = 5
    """How many heads to report per role."""
    n_ablate: int = 3
    """Top name movers ablated for the backup-head measurement."""
    n_path_senders: int = 20
    """Senders (the heads with the largest patching effect) tried in path patching."""
    n_facts: int = 8
    """Prompts in the factual-recall batch (0 skips it)."""
    seed: int = 0
    """Seed of the prompt draw."""
    memory_mb: float = 256.0
    """Memory budget of the batched sweeps."""

    def __post_init__(self) -> None:
        check_types(self)
        for f in ("n_per_template", "n_patch", "top_k", "n_ablate"):
            if getattr(self, f) < 1:
                raise ConfigError(f"IOIConfig.{f} must be >= 1, got {getattr(self, f)}")


def head_dla(model: Any, tokens: Tensor, answer: Tensor, wrong: Tensor,
             specs: list[Any] | None = None) -> Tensor:
    """Direct logit attribution of every head at the last position, [n_layers n_heads] (mean over prompts).

    Each head's output ``z W_O`` (through ``ln1_post`` at its frozen scale when the model has post-sublayer norms)
    is divided by the final norm's scale of the actual run (frozen) and projected on
    ``w_ln * (W_U[answer] - W_U[wrong])``.
    """
    names = [act_name("z", layer) for layer in range(model.cfg.n_layers)]
    with torch.inference_mode(), intervene(model, specs or []):
        store: dict[str, Tensor] = {}
        with model.hooks(fwd=[(n, lambda x, hook: store.__setitem__(hook.name, x[:, -1])) for n in names]):
            final = model(tokens, stop_at_layer=model.cfg.n_layers)[:, -1]  # [B d]
        z = torch.stack([store[n] for n in names], 1)  # [B L H e]
        result = torch.einsum("blhe,lhed->blhd", z, model.W_O)
        # with post-sublayer norms (Gemma 2/3) a head adds its result through ln1_post at the forward's scale
        result = torch.stack([head_contributions(model, ly, result[:, ly]) for ly in range(result.shape[1])], 1)
        # the final norm at this run's scale (frozen), its weight included
        result = frozen_norm(model.ln_final, result, norm_scale(model.ln_final, final)[:, None, None])
        direction = (model.W_U[:, answer] - model.W_U[:, wrong]).T  # [B d]
        return torch.einsum("blhd,bd->blh", result, direction).mean(0)


def behaviour(model: Any, cfg: IOIConfig) -> dict[str, Any]:
    """Logit difference and accuracy per template and overall."""
    from mechscope.data.tasks.ioi import TEMPLATES, ioi_dataset

    rows, all_ld = [], []
    for i, p in enumerate(ioi_dataset(model.tokenizer, cfg.n_per_template, seed=cfg.seed)):
        with torch.inference_mode():
            ld = p.metric()(model(p.clean)[:, -1])
        all_ld.append(ld)
        rows.append({"template": TEMPLATES[i], "logit_diff": float(ld.mean()), "accuracy": float((ld > 0).float().mean())})
    ld = torch.cat(all_ld)
    return {"mean_logit_diff": float(ld.mean()), "accuracy": float((ld > 0).float().mean()), "n_prompts": ld.numel(),
            "per_template": rows}


def _heads(t: Tensor, k: int, largest: bool = True) -> list[tuple[str, float]]:
    flat = t.flatten()
    idx = torch.topk(flat if largest else -flat, k).indices.tolist()
    h = t.shape[1]
    return [(f"{i // h}.{i % h}", round(float(flat[i]), 4)) for i in idx]


def circuit(model: Any, cfg: IOIConfig, out: Path) -> dict[str, Any]:
    """Steps 2-6 of the module docstring on one IOI template."""
    from mechscope.data.tasks.ioi import ioi_pairs
    from mechscope.viz.report import save_figure

    p = ioi_pairs(model.tokenizer, cfg.n_patch, template=cfg.template, order="ABBA", seed=cfg.seed + 7)
    metric = p.metric()
    t0 = time.perf_counter()
    resid = patch_sweep(model, p.clean, p.corrupted, metric, "resid_pre", pos_labels=p.pos_labels,
                        memory_mb=cfg.memory_mb)
    heads = patch_sweep(model, p.clean, p.corrupted, metric, "z", memory_mb=cfg.memory_mb)
    t_sweeps = time.perf_counter() - t0
    save_figure(resid.heatmap("IOI: residual stream patching (ABC → clean), normalised logit diff"), out / "resid.png")
    save_figure(heads.heatmap("IOI: head output patching (all positions)"), out / "heads.png")
    dla = head_dla(model, p.clean, p.answer, p.wrong)
    effect = heads.normalised()
    # name movers: positive DLA, ranked by DLA; cross-checked with their patching effect
    movers = _heads(dla, cfg.top_k)
    negative = _heads(dla, min(3, cfg.top_k), largest=False)
    mover_ids = [(int(n.split(".")[0]), int(n.split(".")[1])) for n, _ in movers]
    # S-inhibition: path patching into the name movers' queries at the end position
    nm_layers = sorted({layer for layer, _ in mover_ids})
    receivers = [Receiver(hook=act_name("q_input", layer), heads=[h for lay, h in mover_ids if lay == layer],
                          positions=[-1]) for layer in nm_layers]
    lim = min(nm_layers)
    s_inhib: list[tuple[str, float]] = []
    if lim > 0:  # a name mover in layer 0 has no earlier head to inhibit it
        cand = effect[:lim].abs().flatten().topk(min(cfg.n_path_senders, lim * effect.shape[1])).indices
        senders = [(int(i) // effect.shape[1], int(i) % effect.shape[1]) for i in cand]
        path = path_patch(model, p.clean, p.corrupted, metric, receivers, senders=senders, memory_mb=cfg.memory_mb)
        s_inhib = _heads(torch.nan_to_num(path.normalised(), nan=0.0), min(cfg.top_k, len(senders)))
    # duplicate-token / induction heads from attention at S2
    pats = [act_name("pattern", layer) for layer in range(model.cfg.n_layers)]
    with torch.inference_mode():
        _, cache = model.run_with_cache(p.clean, names=pats)
    b = torch.arange(p.clean.shape[0])
    s1, s2 = p.roles["S1"], p.roles["S2"]
    att = torch.stack([cache[n][b, :, s2] for n in pats], 1)  # [B L H key]
    dup = att[b, :, :, s1].mean(0)
    ind = att[b, :, :, s1 + 1].mean(0)
    backup = _backup(model, p, mover_ids[:cfg.n_ablate], dla, cfg)
    fig = _dla_figure(dla)
    save_figure(fig, out / "dla.png")
    return {"patch_prompts": p.texts, "pos_labels": p.pos_labels, "sweep_seconds": round(t_sweeps, 2),
            "clean_logit_diff": resid.clean, "corrupted_logit_diff": resid.corrupted,
            "resid_top": resid.top(cfg.top_k), "head_patching_top": heads.top(cfg.top_k),
            "name_movers_dla": movers, "name_movers_patching": [(n, round(float(effect[tuple(map(int, n.split(".")))]), 4))
                                                               for n, _ in movers],
            "negative_heads_dla": negative, "s_inhibition_path": s_inhib,
            "duplicate_token": _heads(dup, cfg.top_k), "induction": _heads(ind, cfg.top_k), "backup": backup}


def _backup(model: Any, p: Any, ablate: list[tuple[int, int]], dla: Tensor, cfg: IOIConfig) -> dict[str, Any]:
    """Mean-ablate ``ablate`` heads (mean over the ABC prompts) and measure DLA compensation."""
    names = sorted({act_name("z", layer) for layer, _ in ablate})
    with torch.inference_mode():
        _, ref = model.run_with_cache(p.corrupted, names=names)
    specs = [Ablate(hook=act_name("z", layer), kind="mean", values=ref[act_name("z", layer)], heads=[h])
             for layer, h in ablate]
    after = head_dla(model, p.clean, p.answer, p.wrong, specs)
    delta = after - dla
    first = min(layer for layer, _ in ablate)
    delta[:first] = 0.0
    for layer, h in ablate:
        delta[layer, h] = 0.0
    with torch.inference_mode():
        ld_before = float(p.metric()(model(p.clean)[:, -1]).mean())
        with intervene(model, specs):
            ld_after = float(p.metric()(model(p.clean)[:, -1]).mean())
    return {"ablated": [f"{a}.{b}" for a, b in ablate], "logit_diff_before": ld_before, "logit_diff_after": ld_after,
            "dla_sum_ablated": float(sum(dla[a, b] for a, b in ablate)),
            "compensating_heads": _heads(delta, cfg.top_k), "total_compensation": float(delta.clamp(min=0).sum())}


def _dla_figure(dla: Tensor) -> Any:
    from mechscope.viz.report import new_figure

    fig = new_figure(6.0, 6.0)
    ax = fig.add_subplot(1, 1, 1)
    lim = float(dla.abs().max())
    im = ax.imshow(dla.numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title("IOI: direct logit attribution per head (logit(IO) - logit(S))", fontsize=9)
    fig.colorbar(im, ax=ax)
    return fig


def facts(model: Any, cfg: IOIConfig, out: Path) -> dict[str, Any]:
    """Step 7: residual patching on known landmark → city facts."""
    from mechscope.data.tasks.facts import fact_pairs, known_facts
    from mechscope.viz.report import save_figure

    known = known_facts(model)
    p = fact_pairs(model, known, max_prompts=cfg.n_facts)
    toks = model.tokenizer.to_str_tokens(p.clean[0])
    is_pos = toks.index(" is")
    labels = ["The"] + ["subj"] * (is_pos - 2) + ["[subj_last]"] + toks[is_pos:]
    res = patch_sweep(model, p.clean, p.corrupted, p.metric(), "resid_pre", pos_labels=labels, memory_mb=cfg.memory_mb)
    save_figure(res.heatmap("Factual recall: residual patching (other landmark → clean)"), out / "facts.png")
    norm = res.normalised()
    n_layers = norm.shape[0]
    subj = norm[:, is_pos - 1]
    last = norm[:, -1]
    cross = next((layer for layer in range(n_layers) if last[layer] > subj[layer]), n_layers)
    return {"n_known": len(known), "known": [f"{a} -> {b}" for a, b, _ in known], "patch_prompts": p.texts,
            "clean_logit_diff": res.clean, "corrupted_logit_diff": res.corrupted, "resid_top": res.top(5),
            "subject_last_by_layer": [round(float(x), 3) for x in subj],
            "last_pos_by_layer": [round(float(x), 3) for x in last], "layer_where_last_pos_overtakes_subject": cross}


def run(cfg: IOIConfig, model: Any = None) -> dict[str, Any]:
    """The whole case study; writes ``summary.json`` and PNGs to ``cfg.out_dir`` and returns the summary."""
    if model is None:
        import mechscope

        model = mechscope.load("smollm2-135m")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary: dict[str, Any] = {"config": asdict(cfg), "model": model.cfg.name, "behaviour": behaviour(model, cfg)}
    summary["circuit"] = circuit(model, cfg, out)
    if cfg.n_facts:
        summary["facts"] = facts(model, cfg, out)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(out / "summary.json", summary)
    return summary


__all__ = ["IOIConfig", "behaviour", "circuit", "facts", "head_dla", "run"]
