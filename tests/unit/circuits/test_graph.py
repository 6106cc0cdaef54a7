"""The graph: names, counts, grouped-query receivers, parallel-residual edges, round trips."""

from __future__ import annotations

import pytest
import torch

from mechscope.circuits.graph import EdgeNameError, Graph
from tests.conftest import tiny_model


def _count(n_layers: int, h: int, kv: int, mlp: bool, parallel: bool) -> int:
    """Edges by hand: each receiver reads every sender written before it."""
    total = 0
    for L in range(n_layers):
        before = 1 + L * (h + int(mlp))
        total += (h + 2 * kv) * before
        if mlp:
            total += before + (0 if parallel else h)
    return total + 1 + n_layers * (h + int(mlp))


@pytest.mark.parametrize("kind", ["gpt2", "neox", "llama", "attn_only"])
def test_edge_counts_and_names(kind: str) -> None:
    model = tiny_model(kind)
    g = Graph.from_model(model)
    cfg = model.cfg
    kv = cfg.attention.kv_heads
    assert len(g.edge_names) == _count(cfg.n_layers, cfg.attention.n_heads, kv, cfg.mlp is not None,
                                       cfg.parallel_attn_mlp)
    assert len(set(g.edge_names)) == len(g.edge_names)
    assert int(g.valid.sum()) == len(g.edge_names)
    names = set(g.edge_names)
    assert "input->a0.h1<q>" in names and "a1.h3->logits" in names and "input->logits" in names
    assert ("a0.h1->m0" in names) == (cfg.mlp is not None and not cfg.parallel_attn_mlp)
    if kind == "llama":  # grouped-query: 4 query heads share 2 key/value heads, receivers per kv head
        assert "a0.h1->a1.kv1<k>" in names and "a0.h1->a1.kv1<v>" in names
        assert not any("<k>" in n and ".h" in n.split("->")[1] for n in names)
    else:
        assert "a0.h1->a1.h3<k>" in names


def test_names_round_trip_and_topological_order() -> None:
    g = Graph.from_model(tiny_model("gpt2"))
    for i, name in enumerate(g.edge_names):
        e = g.edge(name)
        assert e.name == name and g.edge_index[name] == i
        assert e.sender.layer < e.receiver.layer or (e.sender.kind == "head" and e.receiver.kind == "mlp")
    values = torch.arange(len(g), dtype=torch.float32)
    assert torch.equal(g.gather(g.scatter(values)), values)
    mask = g.mask(["a0.h2->a1.h0<v>", "m1->logits"])
    assert mask.sum() == 2 and mask[g.sender_index["m1"], g.receiver_index["logits"]] == 1


def test_unknown_edge_lists_close_matches() -> None:
    g = Graph.from_model(tiny_model("gpt2"))
    with pytest.raises(EdgeNameError, match=r"Did you mean: .*a0\.h1->a1\.h3<k>"):
        g.edge("a0.h1->a1.h3<K>")
    with pytest.raises(KeyError):  # also a KeyError, for dict-like callers
        g.edge("nonsense")
