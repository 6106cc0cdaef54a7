"""Attribution graphs: with exact transcoders the edges are patching effects, the scores are 1, errors exact."""

from __future__ import annotations

import pytest
import torch

from mechscope.attribution.graph import MemoryBudgetError, build_graph, graph_scores, prune, top_paths
from mechscope.dictionaries.clt import CLTConfig, CrossLayerTranscoder
from mechscope.dictionaries.transcoder import Transcoder, TranscoderConfig
from mechscope.errors import ConfigError
from mechscope.models.config import MLPConfig
from tests.conftest import tiny_model

TOKS = torch.tensor([2, 9, 14, 5, 7, 30, 11])


def relu_model():
    return tiny_model("gpt2", seed=2, n_layers=3, mlp=MLPConfig(d_mlp=48, act="relu", bias=True)).double()


def exact_transcoders(model):
    """Transcoders that ARE the MLPs: W_enc = diag(w_ln2) W_in, b_enc = b_ln2 W_in + b_in, W_dec = W_out."""
    out = []
    for i, blk in enumerate(model.blocks):
        t = Transcoder(TranscoderConfig(d_in=32, d_out=32, d_sae=48, dtype="float64",
                                        hook_name=f"blocks.{i}.ln2.hook_normalized",
                                        target_hook_name=f"blocks.{i}.hook_mlp_out"))
        with torch.no_grad():
            t.W_enc.copy_(blk.ln2.w[:, None] * blk.mlp.W_in)
            t.b_enc.copy_(blk.ln2.b @ blk.mlp.W_in + blk.mlp.b_in)
            t.W_dec.copy_(blk.mlp.W_out)
            t.b_dec.copy_(blk.mlp.b_out)
        out.append(t)
    return out


def frozen_value(model, tokens, cache, mlp_out, embed, target):
    """Independent check: the frozen model (cached patterns/scales, given MLP outputs and embeddings) and the
    value of one target: ("feature", layer, pos, W_enc column) or ("logit", direction)."""
    L = model.cfg.n_layers
    got = {}
    fwd = [("hook_embed", lambda x, hook: embed[None])]
    for name in cache:
        if name.endswith(("hook_pattern", "hook_scale")) and not name.startswith("ln_final"):
            fwd.append((name, lambda x, hook, c=cache[name]: c))
    fwd += [(f"blocks.{i}.hook_mlp_out", lambda x, hook, i=i: mlp_out[i][None]) for i in range(L)]
    fwd += [(f"blocks.{i}.ln2.hook_normalized", lambda x, hook, i=i: got.__setitem__(i, x)) for i in range(L)]
    fwd.append(("ln_final.hook_scale", lambda x, hook: cache["ln_final.hook_scale"][:, -1:]))
    with torch.no_grad(), model.hooks(fwd=fwd):
        resid = model(tokens[None], stop_at_layer=L)
        final = model.ln_final(resid[:, -1:])[0, 0]
    if target[0] == "feature":
        _, layer, pos, col = target
        return float(got[layer][0, pos] @ col)
    return float(final @ target[1])


@pytest.fixture(scope="module")
def exact_setup():
    model = relu_model()
    tcs = exact_transcoders(model)
    graph = build_graph(model, TOKS, tcs, batch_size=16)
    return model, tcs, graph


def test_exact_transcoders_leave_no_error_and_scores_are_one(exact_setup):
    model, _, graph = exact_setup
    assert graph.n_features > 20
    assert graph.reconstruction_error() < 1e-6  # adjacency stored in float32
    err_cols = graph.adjacency[:, graph.error_slice]
    assert err_cols.abs().max() < 1e-6
    scores = graph_scores(graph)
    assert scores["replacement_score"] == pytest.approx(1.0, abs=1e-5)
    assert scores["completeness_score"] == pytest.approx(1.0, abs=1e-5)
    assert 1 <= graph.logit_tokens.numel() <= 10


def test_exact_graph_edges_equal_patching_effects(exact_setup):
    model, tcs, graph = exact_setup
    names = [n for n in model.hook_names() if n.endswith(("hook_pattern", "hook_scale"))]
    with torch.no_grad():
        _, cache = model.run_with_cache(TOKS[None], names=names + [f"blocks.{i}.hook_mlp_out" for i in range(3)]
                                        + ["hook_embed"])
    mlp_out = torch.stack([cache[f"blocks.{i}.hook_mlp_out"][0] for i in range(3)])
    embed = cache["hook_embed"][0]
    g = torch.Generator().manual_seed(0)
    W_U = model.W_U.detach()
    checked = 0
    # targets: a few layer-2 features and the top logit; sources: features of layers 0-1 and tokens
    tgt_rows = (graph.feature_layer == 2).nonzero()[:, 0]
    tgt_rows = tgt_rows[torch.randperm(tgt_rows.numel(), generator=g)[:3]].tolist() + [graph.logit_slice.start]
    for row in tgt_rows:
        if row < graph.n_features:
            ly, p, i = int(graph.feature_layer[row]), int(graph.feature_pos[row]), int(graph.feature_index[row])
            target = ("feature", ly, p, tcs[ly].W_enc[:, i].detach())
        else:
            tok = int(graph.logit_tokens[0])
            target = ("logit", W_U[:, tok] - W_U.mean(1))
        base = frozen_value(model, TOKS, cache, mlp_out, embed, target)
        assert base == pytest.approx(float(graph.target_values[row]), abs=1e-9)
        srcs = (graph.feature_layer < (graph.feature_layer[row] if row < graph.n_features else 3)).nonzero()[:, 0]
        srcs = srcs[graph.adjacency[row, srcs].abs().argsort(descending=True)[:4]].tolist()
        for s in srcs:  # remove the source feature's decoder output: the target moves by exactly the edge
            ly, p, i = int(graph.feature_layer[s]), int(graph.feature_pos[s]), int(graph.feature_index[s])
            patched = mlp_out.clone()
            patched[ly, p] -= graph.activations[s].double() * tcs[ly].W_dec[i].detach()
            effect = base - frozen_value(model, TOKS, cache, patched, embed, target)
            assert effect == pytest.approx(float(graph.adjacency[row, s]), abs=1e-4)
            checked += 1
        for p in (1, 4):  # zero one token embedding
            e2 = embed.clone()
            e2[p] = 0
            effect = base - frozen_value(model, TOKS, cache, mlp_out, e2, target)
            assert effect == pytest.approx(float(graph.adjacency[row, graph.token_slice.start + p]), abs=1e-4)
            checked += 1
    assert checked >= 12
    assert graph.adjacency[tgt_rows].abs().max() > 1e-2  # edges are not trivially zero


def test_pruning_keeps_influence_and_paths_reach_tokens(exact_setup):
    _, _, graph = exact_setup
    pg = prune(graph, 0.8, 0.98)
    kept_f = int(pg.node_mask[: graph.n_features].sum())
    assert 0 < kept_f < graph.n_features
    assert pg.node_mask[graph.logit_slice].all()
    assert pg.edge_mask.sum() > 0
    paths = top_paths(graph, pg, k=3)
    assert paths and paths[0]["path"][0].startswith("input@") and paths[0]["path"][-1].startswith("logits.")


def test_trained_like_clt_graph_is_exact_with_error_nodes():
    model = relu_model()
    clt = CrossLayerTranscoder(CLTConfig(d_in=32, d_out=32, d_sae=24, n_layers=3, dtype="float64", skip=True))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)
    graph = build_graph(model, TOKS, clt, batch_size=32)
    assert graph.n_features > 10
    assert graph.reconstruction_error() < 1e-6  # edges + constants = values, with non-zero errors
    assert graph.adjacency[:, graph.error_slice].abs().max() > 1e-3
    scores = graph_scores(graph)
    assert 0 < scores["completeness_score"] < 1
    # layer-2 features receive edges from layer-0 features through the CLT's layer-0 -> layer-1 decoders
    rows = (graph.feature_layer == 2).nonzero()[:, 0]
    cols = (graph.feature_layer == 0).nonzero()[:, 0]
    assert graph.adjacency[rows][:, cols].abs().max() > 0


def test_streamed_adjacency_equals_in_memory_and_budget_errors(tmp_path, exact_setup):
    model, tcs, graph = exact_setup
    g2 = build_graph(model, TOKS, tcs, batch_size=7, adjacency_file=tmp_path / "adj.npy")
    assert torch.allclose(g2.adjacency, graph.adjacency, atol=1e-6)
    with pytest.raises(MemoryBudgetError, match="memory budget of 0 MB"):
        build_graph(model, TOKS, tcs, memory_budget_mb=0.001)
    other = [Transcoder(TranscoderConfig(d_in=16, d_out=16, d_sae=8, hook_name="blocks.0.ln2.hook_normalized",
                                         target_hook_name="blocks.0.hook_mlp_out"))]
    with pytest.raises(ConfigError, match="another model"):
        build_graph(model, TOKS, other)


def test_replacement_fidelity_of_exact_and_random_sets():
    from mechscope.attribution.fidelity import replacement_fidelity

    model = relu_model()
    toks = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(1))
    with pytest.warns(UserWarning, match="ce_recovered is unreliable"):  # random MLPs: ablating them barely matters
        exact = replacement_fidelity(model, exact_transcoders(model), toks)
    assert max(exact["nmse"].values()) < 1e-20 and exact["ce_recovered"] == pytest.approx(1.0, abs=1e-9)
    rnd = [Transcoder(TranscoderConfig(d_in=32, d_out=32, d_sae=16, dtype="float64", seed=3,
                                       hook_name="blocks.1.ln2.hook_normalized",
                                       target_hook_name="blocks.1.hook_mlp_out"))]
    with pytest.warns(UserWarning, match="ce_recovered is unreliable"):
        fid = replacement_fidelity(model, rnd, toks)
    assert fid["layers"] == [1] and fid["nmse"][1] > 0.01 and fid["ce_recovered"] != pytest.approx(1.0, abs=1e-3)
