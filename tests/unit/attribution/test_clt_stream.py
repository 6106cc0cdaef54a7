"""A CLT over every MLP: per-layer output scales (formula, replacement, graph codes) and `dict stream --arch clt
--hooks all` on a tiny model, whose result loads as a transcoder set for `attribute fidelity` / graphs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mechscope.attribution.codes import layer_codes
from mechscope.attribution.export import load_transcoder_set
from mechscope.attribution.fidelity import replacement_fidelity
from mechscope.cli.main import app
from mechscope.dictionaries import io
from mechscope.dictionaries.clt import CLTConfig, CrossLayerTranscoder
from mechscope.dictionaries.replacement import replacement
from mechscope.dictionaries.train import Trainer, TrainerConfig
from mechscope.errors import ConfigError
from mechscope.experiments.dictionaries import clt_hook_names, dictionary_for
from mechscope.models.transformer import HookedTransformer
from tests.conftest import tiny_cfg
from tests.unit.attribution.test_clt import _clt, _model64

SCALES = (0.5, 2.0, 4.0)


def test_per_layer_output_scales_in_the_forward_decoders_and_codes():
    clt = _clt(k=2, skip=False).with_config(input_scale=1.5, output_scale=2.0, layer_output_scales=SCALES)
    ref = _clt(k=2, skip=False).with_config(input_scale=1.5, output_scale=1.0)  # same weights, no output scaling
    x = torch.randn(4, 3, 6, dtype=torch.float64)
    got, want = clt(x).recons, ref(x).recons
    for t, s in enumerate(SCALES):
        assert torch.allclose(got[:, t], want[:, t] / (2.0 * s), atol=1e-12)
        assert torch.allclose(clt.decoder_vectors(0)[:, t], ref.decoder_vectors(0)[:, t] / (2.0 * s), atol=1e-12)
    assert torch.allclose(clt.decode(clt(x).acts), got, atol=1e-12)
    target = torch.randn(4, 3, 6, dtype=torch.float64)
    assert torch.allclose(clt.scale_target(target)[:, 1], target[:, 1] * 4.0, atol=1e-12)
    with pytest.raises(ConfigError, match="layer_output_scales must be 3 positive"):
        CLTConfig(d_in=4, d_out=4, d_sae=3, n_layers=3, layer_output_scales=(1.0, 0.0, 1.0))


def test_scaled_clt_replacement_and_graph_codes_use_each_layers_scale():
    model = _model64()
    toks = torch.tensor([[3, 9, 14, 2, 7, 30]])
    clt = _clt(n=3, d=32, skip=True).with_config(input_scale=1.3, output_scale=0.7, layer_output_scales=SCALES)
    ref = model(toks)
    with replacement(model, clt) as names:
        reads = [f"blocks.{i}.ln2.hook_normalized" for i in range(3)]
        out, cache = model.run_with_cache(toks, names=[f"{w}.hook_sae_error" for w in names] + reads
                                          + ["blocks.2.hook_mlp_out"])
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    # the error term is exactly target - the CLT's own prediction at every layer
    x = torch.stack([cache[f"blocks.{i}.ln2.hook_normalized"] for i in range(3)], dim=-2)
    pred = clt(x).recons
    err = cache["blocks.2.hook_mlp_out.hook_sae_error"]
    assert torch.allclose(err, cache["blocks.2.hook_mlp_out"] - pred[..., 2, :], atol=1e-10)
    # graph codes: decoders, bias and skip of each layer in model units, summing to the same prediction
    codes = layer_codes(model, clt)
    for t in range(3):
        total = codes[t].b_dec + x[..., t, :] @ codes[t].W_skip
        for s in range(t + 1):
            pre = codes[s].in_scale * x[..., s, :] @ codes[s].W_enc + codes[s].b_enc
            total = total + codes[s].activate(pre) @ codes[s].decoders[t]
        assert torch.allclose(total, pred[..., t, :], atol=1e-10)


def test_trainer_sets_per_layer_scales_so_every_layer_counts():
    g = torch.Generator().manual_seed(0)
    sizes = torch.tensor([1.0, 10.0, 100.0])  # MLP outputs of very different sizes per layer
    w = torch.randn(6, 6, generator=g)  # one map, scaled per layer
    batches = []
    for _ in range(40):
        x = torch.randn(64, 3, 6, generator=g)
        batches.append((x, (x @ w).relu() * sizes[:, None]))
    clt = CrossLayerTranscoder(CLTConfig(d_in=6, d_out=6, d_sae=16, n_layers=3, k=4,
                                         normalize_activations="expected_norm"))
    Trainer(clt, TrainerConfig(total_steps=40, lr=1e-2, progress=False)).fit(batches)
    ls = torch.tensor(clt.cfg.layer_output_scales)
    assert torch.allclose(ls[0] / ls, sizes, rtol=0.1)  # scales undo the per-layer sizes
    x, t = batches[0]
    nmse = ((clt(x).recons - t).pow(2).sum((0, 2)) / (t - t.mean(0)).pow(2).sum((0, 2)))
    assert nmse.max() < 0.7  # the small first layer is fitted too, not ignored for the last one


def test_dictionary_for_clt_needs_inputs_then_targets():
    d = dictionary_for("clt", clt_hook_names(2), [8, 8, 8, 8], d_sae=4, options={"k": 2}, model_name="m")
    assert isinstance(d, CrossLayerTranscoder) and d.cfg.n_layers == 2
    assert d.cfg.hook_names == ("blocks.0.ln2.hook_normalized", "blocks.1.ln2.hook_normalized")
    assert d.cfg.target_hook_names == ("blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out")
    with pytest.raises(ConfigError, match="n input hooks then n target hooks"):
        dictionary_for("clt", ["a", "b", "c"], [8, 8, 8], d_sae=4, options=None, model_name=None)


def test_dict_stream_clt_all_layers_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    model = HookedTransformer(tiny_cfg("llama", d_vocab=257, n_ctx=64), seed=0)
    model.save(tmp_path / "model")
    lines = [{"text": f"line {i} of a tiny corpus where sparse features fire rarely"} for i in range(60)]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    src = ["--model", str(tmp_path / "model"), "--corpus", str(tmp_path / "c.jsonl"), "--seq-len", "32"]
    train = ["--arch", "clt", "--k", "4", "--d-sae", "16", "--batch-size", "64", "--steps", "6",
             "--buffer-rows", "256", "--model-dtype", "bfloat16", "--precision", "bfloat16"]
    res = CliRunner().invoke(app, ["dict", "stream", *src, "--hooks", "all", "--tokens", "600", *train,
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout.strip().splitlines()[-1])
    n = model.cfg.n_layers
    assert info["arch"] == "clt" and info["n_layers"] == n
    clt = load_transcoder_set(tmp_path / "run" / "dictionary")
    assert isinstance(clt, CrossLayerTranscoder) and clt.cfg.layer_output_scales is not None
    assert len(clt.cfg.layer_output_scales) == n and clt.cfg.k == 4
    assert io.load(tmp_path / "run" / "dictionary").cfg == clt.cfg  # the scales round-trip through config.json
    toks = torch.randint(0, 257, (2, 16), generator=torch.Generator().manual_seed(0))
    clt.with_config(model_name=None)  # it records the --model argument, here a path, not the name "custom"
    with pytest.warns(UserWarning, match="ce_recovered is unreliable"):  # a random tiny model: its MLPs barely matter
        fid = replacement_fidelity(model, clt, toks)
    assert sorted(fid["nmse"]) == list(range(n)) and all(v >= 0 for v in fid["nmse"].values())
    res = CliRunner().invoke(app, ["dict", "stream", *src, "--hooks", "all", "--tokens", "600", "--arch", "topk",
                                   "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "--hooks all is the CLT preset" in res.output


def test_fidelity_warns_when_the_ce_ratio_is_unreliable_or_negative():
    from mechscope.attribution.fidelity import ce_notes
    from tests.unit.attribution.test_graph import exact_transcoders, relu_model

    assert ce_notes([0], clean=3.0, ablated=4.0, replaced=3.5) == []
    assert "worse than zero-ablating layers [0, 1]" in ce_notes([0, 1], clean=3.0, ablated=4.0, replaced=4.5)[0]
    assert "unreliable" in ce_notes([2], clean=3.0, ablated=3.01, replaced=3.5)[0]
    broken = ce_notes(list(range(30)), clean=3.49, ablated=25.99, replaced=11.59, d_vocab=49152)
    assert len(broken) == 1 and "above a uniform guess (ln 49152 = 10.8027)" in broken[0]  # ratio 0.64 flatters
    assert ce_notes([0], clean=3.0, ablated=4.0, replaced=3.5, d_vocab=49152) == []
    assert ce_notes([0], clean=4.5, ablated=6.0, replaced=4.6, d_vocab=50) == []  # untrained: already above ln 50
    model = relu_model()  # its random MLPs barely matter: ablating them moves the loss by ~0.02 nats
    toks = torch.randint(0, model.cfg.d_vocab, (1, 8), generator=torch.Generator().manual_seed(1))
    with pytest.warns(UserWarning, match="unreliable"):
        res = replacement_fidelity(model, exact_transcoders(model), toks)
    assert "read ce_delta" in res["warnings"][0] and abs(res["ce_delta"]) < 1e-6
