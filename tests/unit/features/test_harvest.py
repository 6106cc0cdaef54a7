"""Harvest statistics against a brute-force recomputation on a tiny model + tiny dictionary."""

from __future__ import annotations

import math

import pytest
import torch

from mechscope.errors import ConfigError, HookNameError
from mechscope.features.db import FeatureDB
from mechscope.features.harvest import HarvestConfig, Harvester
from mechscope.features.source import dictionary_features, neuron_features
from mechscope.features.stats import StatsConfig, sample_keys
from tests.unit.features import helpers

SEQ, N_SEQ = 16, 24


def _harvest(tmp_path, fs, model, toks, **over):
    stats = StatsConfig(top_k=5, reservoir=8, n_quantiles=4, left=3, right=2, n_bins=12, seed=3)
    cfg = HarvestConfig(n_tokens=N_SEQ * (SEQ - 1), seq_len=SEQ, batch_size=5, checkpoint_every=2, n_logits=4,
                        n_neighbours=3, stats=stats, **over)
    db = FeatureDB.open(tmp_path / "f.db")
    h = Harvester(model, fs, db, cfg, model_name="tiny", state_dir=tmp_path / "state", tokens=toks)
    summary = h.run(progress=False)
    return db, h, summary, stats


def _brute(model, encode, hook, toks):
    """acts [n_seq seq f] computed in one go, position 0 excluded."""
    _, cache = model.run_with_cache(toks, names=[hook])
    x = cache[hook]
    return encode(x.reshape(-1, x.shape[-1])).view(*toks.shape, -1)


@pytest.mark.parametrize("kind", ["sae", "neurons"])
def test_harvest_equals_brute_force(tmp_path, kind):
    model, toks = helpers.model(), helpers.tokens(N_SEQ, SEQ)
    if kind == "sae":
        fs = dictionary_features(model, helpers.dictionary(), "tiny-sae")
    else:
        fs = neuron_features(model, "blocks.1.mlp.hook_post")
    db, h, summary, stats = _harvest(tmp_path, fs, model, toks)
    with torch.no_grad():
        acts = _brute(model, fs.encode, fs.hook, toks)
    kept = acts[:, 1:].reshape(-1, fs.n_features)  # position 0 is not harvested
    n_tok = kept.shape[0]
    assert summary["n_tokens"] == n_tok
    fired = kept > 0
    rows = {r["feature"]: r for r in db.query("SELECT * FROM features WHERE dictionary = ?", (fs.name,))}
    assert len(rows) == fs.n_features
    for f in range(fs.n_features):
        r = rows[f]
        assert r["n_fired"] == int(fired[:, f].sum())
        assert math.isclose(r["density"], float(fired[:, f].double().mean()), rel_tol=1e-9)
        assert math.isclose(r["mean_act"], float(kept[:, f].double().mean()), rel_tol=1e-5, abs_tol=1e-7)
        assert math.isclose(r["max_act"], max(float(kept[:, f].max()), 0.0), rel_tol=1e-6)
    # histogram: log-spaced bins over the positive values
    edges = stats.edges()
    for f in range(fs.n_features):
        pos = kept[:, f][kept[:, f] > 0].double()
        want = torch.bincount(torch.bucketize(pos, edges[1:-1], right=True), minlength=stats.n_bins)
        got = db.feature(fs.name, f)["histogram"]["counts"]
        assert got == want.tolist()
    # top-k examples are the true top-k, with the right windows
    for f in range(fs.n_features):
        feat = db.feature(fs.name, f)
        vals = kept[:, f]
        want = vals[vals > 0].sort(descending=True).values[:stats.top_k]
        got = torch.tensor([e["activation"] for e in feat["top"]])
        assert torch.allclose(got, want, rtol=1e-6), f
        for e in feat["top"]:
            seq, pos = divmod(e["token_index"], SEQ)
            assert pos >= 1 and math.isclose(float(acts[seq, pos, f]), e["activation"], rel_tol=1e-6)
            lo = max(pos - stats.left, 0)
            window = toks[seq, lo:pos + stats.right + 1]
            assert e["tokens"] == [helpers.ALPHABET[i] for i in window.tolist()]
            assert e["focus"] == pos - lo
            assert torch.allclose(torch.tensor(e["acts"]), acts[seq, lo:pos + stats.right + 1, f], atol=1e-4)
    # quantile samples: the R smallest hash keys among positive activations (bottom-k sampling)
    token_index = (torch.arange(N_SEQ)[:, None] * SEQ + torch.arange(1, SEQ)[None, :]).reshape(-1)
    keys = sample_keys(token_index, fs.n_features, stats.seed)
    for f in range(fs.n_features):
        cand = fired[:, f].nonzero().squeeze(1)
        chosen = cand[keys[cand, f].argsort()][:stats.reservoir]
        want_tok = sorted(token_index[chosen].tolist())
        q = db.feature(fs.name, f)["quantiles"]
        assert sorted(e["token_index"] for e in q) == want_tok
        by_act = sorted(q, key=lambda e: e["activation"])
        assert [e["quantile"] for e in by_act] == sorted(e["quantile"] for e in q)  # groups follow activation
    # co-activation neighbours: Jaccard of firing sets, brute force
    a = fired.double()
    co = a.T @ a
    union = co.diagonal()[:, None] + co.diagonal()[None, :] - co
    jac = torch.where(union > 0, co / union.clamp_min(1), torch.zeros_like(co)).fill_diagonal_(-1)
    for f in range(fs.n_features):
        got = rows[f]["neighbours_coact"]
        got = __import__("json").loads(got)
        assert [round(v, 4) for _, v in got] == [round(float(v), 4) for v in jac[f].topk(3).values]
    # logit effects: write direction through W_U
    logits = fs.directions @ model.W_U.detach()
    top = __import__("json").loads(rows[0]["top_logits"])
    assert [t for t, _ in top] == [helpers.ALPHABET[i] for i in logits[0].topk(4).indices.tolist()]


def test_neuron_write_direction_is_w_out(tmp_path):
    model = helpers.model()
    fs = neuron_features(model, "blocks.1.mlp.hook_post")
    assert torch.allclose(fs.directions, model.blocks[1].mlp.W_out.detach())
    assert fs.in_residual and fs.n_features == model.cfg.mlp.d_mlp


def test_dictionary_whose_hook_the_model_lacks():
    model = helpers.model()
    d = helpers.dictionary()
    d.with_config(hook_name="blocks.7.hook_resid_post")
    with pytest.raises(HookNameError, match="blocks.7.hook_resid_post"):
        dictionary_features(model, d, "x")


def test_too_many_tokens_is_a_clear_error(tmp_path):
    model, toks = helpers.model(), helpers.tokens(4, SEQ)
    fs = dictionary_features(model, helpers.dictionary(), "x")
    db = FeatureDB.open(tmp_path / "f.db")
    with pytest.raises(ConfigError, match="fewer than"):
        Harvester(model, fs, db, HarvestConfig(n_tokens=10_000, seq_len=SEQ), model_name="tiny",
                  state_dir=tmp_path, tokens=toks)
