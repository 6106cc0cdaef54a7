"""Attribution graphs on compiled RASP programs recover the compiler's known path.

A compiled program's MLPs are exact ReLU MLPs with no norm, so each is its own transcoder (``W_enc = W_in``,
``b_enc = b_in``, ``W_dec = W_out``, ``b_dec = b_out``). With attention frozen, the graph can only show the
MLP -> MLP -> logit part of a path (heads are folded into the edges), so the check is: the top path's
components, read as ``input`` / ``m{L}`` / ``logits``, are joined in the compiler's wiring by reads through
attention heads only; every MLP on it writes a token-dependent SOp (a sender of a ground-truth edge); the
path ends at the program's answer; and the kept features are the neurons the compiler built for it.
"""

from __future__ import annotations

import re

import pytest
import torch

from mechscope.attribution.graph import build_graph, graph_scores, prune, top_paths
from mechscope.circuits.truth.rasp.lang import evaluate
from mechscope.circuits.truth.rasp.truth import compile_named
from mechscope.dictionaries.transcoder import Transcoder, TranscoderConfig

# program -> (input, the MLP chain the truth names from the input side to the logits)
CASES = {
    "prev_sum": ((2, 2, 0, 1, 1), ["m0"]),  # (x + prev) % 3: a lookup neuron per (x, prev) pair
    "hist": ((1, 0, 1, 2, 1), ["m0"]),  # selector width decoded by m0
    "repeat_count": ((1, 0, 1, 2, 1), ["m0", "m1"]),  # width in m0, min(width, 2) in m1
    "frac_prevs": ((1, 0, 1, 2, 1), ["m0"]),  # is_one in m0, averaged by a1.h0 into the (numerical) logit
}


def exact_transcoders(model):
    out = []
    for i, blk in enumerate(model.blocks):
        d, h = model.cfg.d_model, model.cfg.mlp.d_mlp
        t = Transcoder(TranscoderConfig(d_in=d, d_out=d, d_sae=h, hook_name=f"blocks.{i}.hook_mlp_in",
                                        target_hook_name=f"blocks.{i}.hook_mlp_out"))
        with torch.no_grad():
            t.W_enc.copy_(blk.mlp.W_in)
            t.b_enc.copy_(blk.mlp.b_in)
            t.W_dec.copy_(blk.mlp.W_out)
            t.b_dec.copy_(blk.mlp.b_out)
        out.append(t)
    return out


def component(node: str) -> str:
    """Graph node -> compiler component: ``m0.f3@5`` -> ``m0``, ``input@2`` -> ``input``, ``logits.1`` -> ``logits``."""
    return node.split(".")[0].split("@")[0]


def joined_through_heads(a: str, b: str, wiring: frozenset[str]) -> bool:
    """Is there a chain ``a -> (heads)* -> b`` in the wiring (``<q>/<k>/<v>`` read suffixes dropped)?"""
    succ: dict[str, set[str]] = {}
    for e in wiring:
        s, r = e.split("->")
        succ.setdefault(s, set()).add(re.sub(r"<[qkv]>$", "", r))
    seen, todo = set(), [a]
    while todo:
        x = todo.pop()
        for y in succ.get(x, ()):
            if y == b:
                return True
            if re.fullmatch(r"a\d+\.h\d+", y) and y not in seen:
                seen.add(y)
                todo.append(y)
    return False


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    name = request.param
    xs, chain = CASES[name]
    comp, _ = compile_named(name)
    toks = comp.encode([xs])[0]
    graph = build_graph(comp.model, toks, exact_transcoders(comp.model))
    return name, comp, xs, chain, graph


def test_rasp_graph_is_exact(case):
    _, _, _, _, graph = case
    assert graph.reconstruction_error() < 1e-5
    assert graph.adjacency[:, graph.error_slice].abs().max() < 1e-5  # exact transcoders: errors are zero
    assert graph_scores(graph)["completeness_score"] == pytest.approx(1.0, abs=1e-5)


def test_rasp_graph_top_path_is_the_compiled_path(case):
    name, comp, xs, chain, graph = case
    answer = evaluate(comp.output, list(xs))[-1]
    if comp.output.encoding == "categorical":  # the top logit is the program's answer at the last position
        assert int(graph.logit_tokens[0]) == comp.output.values.index(answer)
    else:
        assert float(graph.target_values[graph.logit_slice.start]) == pytest.approx(float(answer), abs=1e-3)
    pg = prune(graph, 0.8, 0.98)
    paths = top_paths(graph, pg, k=3)
    assert paths, f"{name}: no path from a token to a logit"
    comps = [component(n) for n in paths[0]["path"]]
    assert comps[0] == "input" and comps[-1] == "logits"
    assert comps[1:-1] == chain, f"{name}: top path {paths[0]['path']} is not the MLP chain {chain}"
    for a, b in zip(comps, comps[1:]):
        assert joined_through_heads(a, b, comp.wiring), f"{name}: {a}->{b} is not wired"
    senders = {e.split("->")[0] for e in comp.edges}
    assert set(chain) <= senders  # every MLP on the path writes a token-dependent SOp
    # the kept features all belong to the truth's MLPs, and every truth MLP is represented
    names = graph.node_names()
    kept = [names[i] for i in pg.node_mask[: graph.n_features].nonzero()[:, 0].tolist()]
    assert kept and {component(n) for n in kept} == set(chain)
    # most of the logit's direct input comes from the last MLP on the chain
    row = graph.adjacency[graph.logit_slice.start]
    last_mlp = torch.tensor([component(n) == chain[-1] for n in names])
    assert row[last_mlp].abs().sum() > 0.5 * row.abs().sum()


def test_prev_sum_feature_is_the_pair_neuron_and_both_tokens_feed_it():
    comp, _ = compile_named("prev_sum")
    xs = (2, 2, 0, 1, 1)
    graph = build_graph(comp.model, comp.encode([xs])[0], exact_transcoders(comp.model))
    pg = prune(graph, 0.8, 0.98)
    names = graph.node_names()
    kept = [names[i] for i in pg.node_mask[: graph.n_features].nonzero()[:, 0].tolist()]
    # the compiler's neuron for (x, prev) = (1, 1) is 1 * 3 + 1 at the last position (index 5 = BOS + 4)
    assert kept == ["m0.f4@5"]
    paths = {tuple(p["path"]) for p in top_paths(graph, pg, k=4)}
    # the current token directly, the previous token through the frozen prev head (a0.h0): equal weight
    assert ("input@5", "m0.f4@5", "logits.2") in paths and ("input@4", "m0.f4@5", "logits.2") in paths
