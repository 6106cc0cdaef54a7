"""The patchable forward: no edge patched = the clean forward, every edge patched = the corrupted forward,
on every model family (incl. grouped-query and parallel-residual); one edge equals a hand-made path patch."""

from __future__ import annotations

import pytest
import torch

from mechscope.circuits.graph import Graph
from mechscope.circuits.patchable import patch_values, patched_logits
from tests.conftest import FAMILY_KINDS, tiny_model


def _pair(seed: int = 0, b: int = 3, p: int = 7, vocab: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, p), generator=g), torch.randint(0, vocab, (b, p), generator=g)


@pytest.mark.parametrize("kind", FAMILY_KINDS)
def test_no_edges_is_clean_and_all_edges_is_corrupted(kind: str) -> None:
    model = tiny_model(kind)
    graph = Graph.from_model(model)
    clean, corrupted = _pair()
    patch = patch_values(model, graph, corrupted)
    none = torch.zeros(len(graph.senders), len(graph.receivers))
    every = graph.valid.float()
    with torch.no_grad():
        ref_clean, ref_corr = model(clean), model(corrupted)
        got = patched_logits(model, graph, clean, patch, torch.stack([none, every]), readout=None)
    b = clean.shape[0]
    torch.testing.assert_close(got[:b], ref_clean, rtol=1e-5, atol=1e-5)  # per-head path: re-associated sums
    torch.testing.assert_close(got[b:], ref_corr, rtol=1e-4, atol=1e-4)
    # readout: the same numbers at one position
    with torch.no_grad():
        last = patched_logits(model, graph, clean, patch, every, readout=-1)
    torch.testing.assert_close(last[:, 0], ref_corr[:, -1], rtol=1e-4, atol=1e-4)


def test_one_edge_equals_a_hand_made_path_patch() -> None:
    """Patching a0.h1 -> a1.h2<v> by hand: the value input of head 2 at layer 1 gets the corrupted output
    of head 1 at layer 0 in place of the clean one; nothing else changes."""
    model = tiny_model("gpt2")
    graph = Graph.from_model(model)
    clean, corrupted = _pair(1)
    with torch.no_grad():
        _, cc = model.run_with_cache(corrupted, names=["blocks.0.attn.hook_result"])
        _, cl = model.run_with_cache(clean, names=["blocks.0.attn.hook_result"])
        delta = cc["blocks.0.attn.hook_result"][:, :, 1] - cl["blocks.0.attn.hook_result"][:, :, 1]

        def edit(x: torch.Tensor, hook: object) -> torch.Tensor:
            x = x.clone()
            x[:, :, 2] += delta
            return x

        with model.hooks(fwd=[("blocks.1.hook_v_input", edit)]):
            ref = model(clean)
        got = patched_logits(model, graph, clean, patch_values(model, graph, corrupted),
                             graph.mask(["a0.h1->a1.h2<v>"]), readout=None)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ref, model(clean))


def test_post_sublayer_models_are_refused() -> None:
    """Gemma 2/3's ln1_post normalises the heads' sum, so patched head outputs would not add up: refused."""
    from mechscope.circuits.discover import discover
    from mechscope.errors import ConfigError
    from mechscope.models.config import NormConfig

    model = tiny_model("llama", norm=NormConfig(kind="rmsnorm", post_sublayer=True))
    clean, corrupted = _pair()
    with pytest.raises(ConfigError, match="post_sublayer"):
        patch_values(model, Graph.from_model(model), corrupted)
    with pytest.raises(ConfigError, match="post_sublayer"):
        discover(model, clean, corrupted, lambda logits: logits[..., 0].mean(-1), method="eap")
