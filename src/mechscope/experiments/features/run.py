"""The recorded feature study of ``docs/features.md``: explain and score a random sample of SAE latents and of
MLP neurons of the same layer with the same explainer, and compare their scores.

    python -c "from mechscope.experiments.features import study; study('runs/features/smollm2.db')"
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path
from typing import Any

from mechscope.features.autointerp.clients import ChatClient
from mechscope.features.autointerp.run import explain_features, score_features
from mechscope.features.db import FeatureDB


def sample_features(db: FeatureDB, dictionary: str, n: int, seed: int = 0, min_density: float = 1e-3,
                    max_density: float = 0.2) -> list[int]:
    """``n`` random features of ``dictionary`` whose density lies in [min_density, max_density]."""
    rows = db.query("SELECT feature FROM features WHERE dictionary = ? AND density >= ? AND density <= ? "
                    "ORDER BY feature", (dictionary, min_density, max_density))
    ids = [r["feature"] for r in rows]
    return sorted(random.Random(seed).sample(ids, min(n, len(ids))))


def study(db_path: str, client: ChatClient | None = None, *, dictionaries: tuple[str, ...] = (
        "sae-l6", "neurons:blocks.6.mlp.hook_post"), n: int = 10, seed: int = 0, n_score: int = 10) -> dict[str, Any]:
    """Explain + score ``n`` sampled features of each dictionary; returns per-dictionary rows and means."""
    if client is None:
        import mechscope
        from mechscope.features.autointerp.clients import LocalChat

        client = LocalChat(mechscope.load("smollm2-135m").eval())
    db = FeatureDB.open(db_path)
    out: dict[str, Any] = {}
    for d in dictionaries:
        # neurons of a gated MLP are positive about half the time: sample them without the density cap
        feats = sample_features(db, d, n, seed, max_density=1.0 if d.startswith("neurons:") else 0.2)
        texts = explain_features(db, d, feats, client)
        scores = score_features(db, d, feats, client, n=n_score)
        rows: list[dict[str, Any]] = [{"feature": f, "explanation": texts[f], **scores.get(f, {})} for f in feats]
        det = [float(scores.get(f, {}).get("detection", 0.0)) for f in feats]
        fuzz = [float(scores.get(f, {}).get("fuzzing", 0.0)) for f in feats]
        out[d] = {"rows": rows, "mean_detection": statistics.mean(det), "mean_fuzzing": statistics.mean(fuzz)}
    return out


__all__ = ["study", "sample_features"]


def screenshots(db_path: str, out_dir: str, features: list[tuple[str, int]], *, model: Any = None,
                steer: tuple[str, int, float] | None = None) -> list[str]:
    """The pictures of ``docs/features.md``: the browser, feature pages, and (with a model) the prompt explorer
    and a steering run, served by a real ``mechscope serve`` app on loopback and shot in Chromium."""
    from pathlib import Path
    from urllib.parse import quote

    from mechscope.web.app import create_app
    from mechscope.web.screenshots import browser_page
    from mechscope.web.server import serving

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shots: list[str] = []
    with serving(create_app(db_path, model=model)) as url, browser_page(1280, 1000) as page:
        def shot(name: str) -> None:
            page.screenshot(path=str(out / f"{name}.png"))
            shots.append(str(out / f"{name}.png"))

        page.goto(url + "/?sort=score&limit=40")
        shot("browser")
        for d, f in features:
            page.goto(url + f"/features/{quote(d, safe='')}/{f}")
            shot(f"feature-{d.replace(':', '_').replace('.', '_')}-{f}")
        if model is not None:
            page.goto(url + "/prompt")
            page.fill("#text", "When Mary and John went to the store, John gave a drink to")
            page.click("#go")
            page.wait_for_selector("#attention tr", timeout=300_000)
            page.select_option("#layer", "6")
            shot("prompt-explorer")
        if model is not None and steer is not None:
            d, f, value = steer
            page.goto(url + f"/steer?dictionary={quote(d, safe='')}&feature={f}")
            page.fill("#prompt", "The weather today is")
            page.fill("#value", str(value))
            page.click("#go")
            page.wait_for_selector("#status:text-is('done')", timeout=600_000)
            shot("steering")
    return shots


def rule_study(db_path: str, *, dictionaries: tuple[str, ...] = ("sae-l6", "neurons:blocks.6.mlp.hook_post"),
               n: int = 100, seed: int = 0, n_score: int = 10) -> dict[str, Any]:
    """The same protocol with the rule-based top-token explainer / scorer (no language model): how well does
    "the token X" explain a random sample of ``n`` features of each dictionary?"""
    from mechscope.features.autointerp.rules import TopTokenRule

    rule = TopTokenRule()
    db = FeatureDB.open(db_path)
    out: dict[str, Any] = {}
    for d in dictionaries:
        feats = sample_features(db, d, n, seed + 1, max_density=1.0 if d.startswith("neurons:") else 0.2)
        explain_features(db, d, feats, rule, progress=False)
        scores = score_features(db, d, feats, rule, explainer=rule.name, n=n_score, progress=False)
        det = [s["detection"] for s in scores.values()]
        fuzz = [s["fuzzing"] for s in scores.values()]
        out[d] = {"n": len(scores), "mean_detection": statistics.mean(det), "mean_fuzzing": statistics.mean(fuzz),
                  "median_detection": statistics.median(det), "median_fuzzing": statistics.median(fuzz)}
    return out


def random_directions_like(sae_dir: str, out_dir: str, seed: int = 0) -> str:
    """A baseline "dictionary" of random unit directions with the same hook, count, k and centring as the TopK SAE
    in ``sae_dir``: ``W_enc`` / ``W_dec`` are i.i.d. Gaussian directions normalised to unit length, ``b_enc = 0``,
    ``b_dec`` (the centre subtracted before encoding, ≈ the activations' mean) copied from the SAE. Sparsity-matched
    on purpose: each token keeps its ``k`` most aligned random directions, as the SAE keeps its ``k`` latents, so
    the comparison is about the directions, not about how many fire. Saved with the dictionary format; returns
    its path."""
    import torch

    from mechscope.dictionaries.io import load, save

    sae = load(sae_dir)
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(sae.cfg.d_sae, sae.cfg.d_in, generator=g)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        sae.W_dec.copy_(dirs.to(sae.W_dec.dtype))
        sae.W_enc.copy_(dirs.T.to(sae.W_enc.dtype))
        sae.b_enc.zero_()
    return str(save(sae, out_dir))


def page_screenshots(db_path: str, runs: list[str | Path], out_dir: str, shots: dict[str, tuple[str, list[str]]],
                     *,
                     width: int = 1280, height: int = 1000, full_page: bool = False) -> list[str]:
    """Screenshots of any pages of a real ``mechscope serve`` app (``--runs`` = ``runs``) in Chromium: for each
    ``name: (path, selectors)``, open ``path``, click each selector in turn, and save ``out_dir/name.png``
    (the geometry, run and attribution-graph pictures of ``docs/features.md``)."""
    from mechscope.web.app import create_app
    from mechscope.web.screenshots import browser_page
    from mechscope.web.server import serving

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    with serving(create_app(db_path, runs=runs)) as url, browser_page(width, height) as page:
        for name, (path, clicks) in shots.items():
            page.goto(url + path, wait_until="networkidle")
            for sel in clicks:
                page.click(sel)
            page.screenshot(path=str(out / f"{name}.png"), full_page=full_page)
            written.append(str(out / f"{name}.png"))
    return written


def topk_neurons(hook: str, width: int, k: int, out_dir: str, model_name: str = "smollm2-135m") -> str:
    """The neurons of ``hook`` made as sparse as a TopK SAE: a TopK "dictionary" with identity encoder and decoder
    (``W_enc = W_dec = I``, no biases), so each token keeps its ``k`` largest neurons and the rest read 0 — the
    density-matched neuron baseline for the latents-vs-neurons comparison. Saved in the dictionary format."""
    import torch

    from mechscope.dictionaries.io import save
    from mechscope.dictionaries.registry import create
    from mechscope.dictionaries.topk import TopKConfig

    d = create(TopKConfig(d_in=width, d_sae=width, k=k, hook_name=hook, model_name=model_name))
    with torch.no_grad():
        d.W_enc.copy_(torch.eye(width))
        d.W_dec.copy_(torch.eye(width))
        d.b_enc.zero_()
        d.b_dec.zero_()
    return str(save(d, out_dir))
