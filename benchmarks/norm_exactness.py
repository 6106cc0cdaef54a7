"""Exactness of the frozen-norm analyses on Gemma-3-shaped random models (q/k norms, post-sublayer norms, GQA,
sliding windows with their own rotary base): prints JSON.

- ``qk``: max |Σ terms - score| of ``qk_attribution`` over every (layer, head) and a spread of (query, key)
  pairs inside the window, against ``hook_attn_scores`` of a plain forward, and the largest |score|.
- ``heads``: max |Σ_h stack_head_results - hook_attn_out| over layers, batch and positions, and max |attn_out|.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/norm_exactness.py`` (about 3 s on one core).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, machine  # noqa: E402

from mechscope.attribution.qk import qk_attribution  # noqa: E402
from mechscope.cache.analysis import stack_head_results  # noqa: E402
from mechscope.dictionaries.transcoder import Transcoder, TranscoderConfig  # noqa: E402
from mechscope.models.config import (  # noqa: E402
    AttentionConfig,
    MLPConfig,
    ModelConfig,
    NormConfig,
    PositionalConfig,
)
from mechscope.models.transformer import HookedTransformer  # noqa: E402


def model(dtype: torch.dtype, seed: int) -> Any:
    cfg = ModelConfig(d_model=64, n_layers=4, d_vocab=100, n_ctx=32, embed_scale=8.0,
                      attention=AttentionConfig(n_heads=4, d_head=16, n_kv_heads=1, qk_norm=True, scale=0.0625,
                                                sliding_window=6, global_every=2),
                      mlp=MLPConfig(kind="gated", d_mlp=128, act="gelu"),
                      norm=NormConfig(kind="rmsnorm", eps=1e-6, post_sublayer=True),
                      positional=PositionalConfig(kind="rotary", rotary_base=1e6, local_rotary_base=1e4))
    m = HookedTransformer(cfg, seed=seed).to(dtype).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith(".w"):
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g, dtype=dtype))
    return m


def transcoders(m: Any, dtype: torch.dtype) -> list[Transcoder]:
    out = []
    for i in range(m.cfg.n_layers):
        t = Transcoder(TranscoderConfig(d_in=64, d_out=64, d_sae=32, dtype=str(dtype).split(".")[1], skip=True,
                                        hook_name=f"blocks.{i}.ln2.hook_normalized",
                                        target_hook_name=f"blocks.{i}.hook_mlp_out"))
        g = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for p in t.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.2)
        out.append(t)
    return out


def measure(dtype: torch.dtype, seed: int = 0) -> dict[str, Any]:
    m = model(dtype, seed)
    tokens = torch.randint(0, 100, (16,), generator=torch.Generator().manual_seed(seed))
    tcs = transcoders(m, dtype)
    names = [f"blocks.{i}.attn.hook_attn_scores" for i in range(m.cfg.n_layers)]
    _, cache = m.run_with_cache(tokens[None], names=names)
    err, top, n = 0.0, 0.0, 0
    for layer in range(m.cfg.n_layers):
        for head in range(m.cfg.n_heads):
            for q, k in ((15, 15), (15, 10), (12, 7), (9, 4), (15, 0) if not m.cfg.attention.is_local(layer) else (5, 0)):
                res = qk_attribution(m, tokens, tcs, layer, head, q, k)
                score = float(cache[names[layer]][0, head, q, k])
                err, top, n = max(err, abs(float(res.terms.sum()) - score)), max(top, abs(score)), n + 1
    batch = torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(seed + 1))
    _, full = m.run_with_cache(batch)
    L, H = m.cfg.n_layers, m.cfg.n_heads
    heads = stack_head_results(full, m).stack.view(L, H, *batch.shape, -1).sum(1)
    attn_out = torch.stack([full[f"blocks.{i}.hook_attn_out"] for i in range(L)])
    return {"qk_scores": n, "qk_max_abs_error": err, "qk_max_abs_score": top,
            "heads_max_abs_error": float((heads - attn_out).abs().max()),
            "attn_out_max_abs": float(attn_out.abs().max())}


if __name__ == "__main__":
    torch.set_num_threads(1)
    emit({"machine": machine(), "float64": measure(torch.float64), "float32": measure(torch.float32)})
