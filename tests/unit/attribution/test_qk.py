"""QK attribution: the bilinear terms sum to the attention score (rotary/GQA/RMSNorm and LayerNorm/biases)."""

from __future__ import annotations

import pytest
import torch

from mechscope.attribution.qk import qk_attribution
from mechscope.dictionaries.clt import CLTConfig, CrossLayerTranscoder
from mechscope.dictionaries.transcoder import Transcoder, TranscoderConfig
from mechscope.errors import ConfigError
from tests.conftest import tiny_model

TOKS = torch.tensor([1, 8, 3, 12, 9, 4, 20])


def _randomise(d, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in d.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return d


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_qk_terms_sum_to_the_attention_score(kind):
    model = tiny_model(kind, seed=4, n_layers=3).double()
    tcs = [_randomise(Transcoder(TranscoderConfig(d_in=32, d_out=32, d_sae=20, dtype="float64", skip=True,
                                                  hook_name=f"blocks.{i}.ln2.hook_normalized",
                                                  target_hook_name=f"blocks.{i}.hook_mlp_out")), i)
           for i in (0, 1)]
    res = qk_attribution(model, TOKS, tcs, layer=2, head=3, query_pos=6, key_pos=2)
    assert abs(res.score) > 1e-3
    assert float(res.terms.sum()) == pytest.approx(res.score, abs=1e-9)
    assert any(n.startswith("m0.f") for n in res.query_names)  # active features are components
    assert len(res.top(5)) == 5 and res.to_json()["sum_of_terms"] == pytest.approx(res.score, abs=1e-9)


def test_qk_with_a_clt_and_bad_positions():
    model = tiny_model("llama", seed=5, n_layers=3).double()
    clt = _randomise(CrossLayerTranscoder(CLTConfig(d_in=32, d_out=32, d_sae=10, n_layers=3, dtype="float64")), 1)
    res = qk_attribution(model, TOKS, clt, layer=1, head=0, query_pos=4, key_pos=4)
    assert float(res.terms.sum()) == pytest.approx(res.score, abs=1e-9)
    with pytest.raises(ConfigError, match="key_pos <= query_pos"):
        qk_attribution(model, TOKS, clt, layer=1, head=0, query_pos=2, key_pos=4)
