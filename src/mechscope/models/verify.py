"""``verify_model``: the parity certificate behind ``mechscope verify``.

Loads the model with mechscope and the same weights with transformers (for the embedded SmolLM2 or any
GGUF: transformers' own GGUF loader; for a directory: ``AutoModelForCausalLM``), then compares logits and
every activation the adapter can observe, per dtype. Thresholds: float32 max |Δlogit| ≤ 1e-3. In lower
precision the two implementations round differently at every layer, so their mutual difference says
little; instead each is compared with the float32 reference, and mechscope passes when its error is no
more than 1.5× transformers' own error at that dtype.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mechscope.errors import ConfigError, ModelNotInstalledError
from mechscope.models.parity import compare_to_hf

_TEXTS = ["When Mary and John went to the store, John gave a drink to",
          "The Eiffel Tower is in the city of Paris, which is the capital of"]


def _reference(name: str) -> tuple[Any, str]:
    try:
        import transformers
    except ImportError as e:
        raise ModelNotInstalledError("verify needs transformers (and accelerate for GGUF): "
                                     "pip install 'mechscope[hf]'") from e
    p = Path(name)
    if p.is_dir():
        from mechscope.models.loading import refuse_remote_code

        refuse_remote_code(p)
        return transformers.AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, trust_remote_code=False,
                                                                 dtype=torch.float32), "transformers from_pretrained"
    if p.suffix != ".gguf":
        from mechscope.models.registry import locate_gguf

        p = locate_gguf(name)
    return (transformers.AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32,
                                                              local_files_only=True, trust_remote_code=False),
            "transformers GGUF loader")


def verify_model(name: str, dtypes: list[str]) -> dict[str, Any]:
    """Compare mechscope and transformers on the same weights; one result row per dtype."""
    from mechscope.models.loading import load

    allowed = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    bad = [d for d in dtypes if d not in allowed]
    if bad:
        raise ConfigError(f"unknown dtype(s) {bad}; allowed: {sorted(allowed)}")
    ours = load(name).eval()
    ref, how = _reference(name)
    ref.eval()
    if ours.tokenizer is not None:
        tokens = ours.tokenizer.to_tokens(_TEXTS)[:, :14]
    else:
        tokens = torch.randint(0, ours.cfg.d_vocab, (2, 14), generator=torch.Generator().manual_seed(0))
    results = []
    with torch.no_grad():
        ref32 = ref.to(torch.float32)(tokens).logits.float()
    for d in dtypes:
        dt = allowed[d]
        ours_d, ref_d = ours.to(dt), ref.to(dt)
        parity = compare_to_hf(ours_d, ref_d, tokens)
        rep = parity.to_dict()
        if dt == torch.float32:
            rep["limit"] = 1e-3
            rep["pass"] = rep["logits_max_abs"] <= 1e-3
        else:
            assert parity.logits is not None and parity.ref_logits is not None
            ours_err = float((parity.logits.float() - ref32).abs().max())
            hf_err = float((parity.ref_logits.float() - ref32).abs().max())
            rep.update(ours_err_vs_float32=ours_err, transformers_err_vs_float32=hf_err,
                       limit=1.5 * hf_err + 1e-6)
            rep["pass"] = ours_err <= rep["limit"]
        results.append(rep)
    verdict = "PASS" if all(r["pass"] for r in results) else "FAIL"
    return {"model": name, "reference": how, "tokens": list(tokens.shape), "results": results, "verdict": verdict}
