"""GGUF beyond ``llama``: tiny random ``qwen2`` / ``qwen3`` / ``gemma3`` files written with ``gguf.GGUFWriter`` the
way llama.cpp's converter lays them out (its own tensor-name map, Gemma's ``1 + w`` norms, no Q/K permutation,
the quantisation types of the real Gemma-3-270M file), read by mechscope and by transformers' own GGUF loader:
the logits must agree to float32 rounding. transformers never sees mechscope's mapping, so a wrong name,
offset, scale or mask shows up as a logit difference."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mechscope.errors import ConfigError, ModelFileError
from mechscope.models.gguf import SUPPORTED_ARCHITECTURES, read_gguf
from mechscope.models.loading import from_gguf

# d, heads, kv, head_dim, layers, mlp, vocab; gemma3's head_dim 256 is the query scale transformers assumes
# (it reads no query_pre_attn_scalar from GGUF), qwen3's 128 the head_dim it assumes (it reads no key_length).
SHAPES: dict[str, dict[str, int]] = {
    "qwen2": {"d": 64, "heads": 4, "kv": 2, "dh": 16, "layers": 2, "mlp": 96, "vocab": 64},
    "qwen3": {"d": 64, "heads": 2, "kv": 1, "dh": 128, "layers": 2, "mlp": 96, "vocab": 64},
    "gemma3": {"d": 64, "heads": 2, "kv": 1, "dh": 256, "layers": 6, "mlp": 256, "vocab": 64},
}
WINDOW = 4  # gemma3: layers 0-4 see the 4 latest tokens, layer 5 all (llama.cpp's pattern: every 6th global)


def hf_state(arch: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A random transformers-named state dict (norm weights around 1 in the file's convention)."""
    s = SHAPES[arch]
    g = np.random.default_rng(seed)
    d, h, kv, dh, mlp, v = s["d"], s["heads"], s["kv"], s["dh"], s["mlp"], s["vocab"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,)}
    if arch != "gemma3":
        shapes["lm_head.weight"] = (v, d)
    for i in range(s["layers"]):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
                   p + "self_attn.q_proj.weight": (h * dh, d), p + "self_attn.k_proj.weight": (kv * dh, d),
                   p + "self_attn.v_proj.weight": (kv * dh, d), p + "self_attn.o_proj.weight": (d, h * dh),
                   p + "mlp.gate_proj.weight": (mlp, d), p + "mlp.up_proj.weight": (mlp, d),
                   p + "mlp.down_proj.weight": (d, mlp)}
        if arch == "qwen2":
            shapes |= {p + f"self_attn.{x}_proj.bias": (n * dh,) for x, n in (("q", h), ("k", kv), ("v", kv))}
        if arch in ("qwen3", "gemma3"):
            shapes |= {p + "self_attn.q_norm.weight": (dh,), p + "self_attn.k_norm.weight": (dh,)}
        if arch == "gemma3":
            shapes |= {p + "pre_feedforward_layernorm.weight": (d,), p + "post_feedforward_layernorm.weight": (d,)}
    out = {}
    for k, shape in shapes.items():
        x = g.standard_normal(shape).astype(np.float32)
        if k.endswith("norm.weight"):
            x = (0.3 * x + (0.0 if arch == "gemma3" else 1.0)).astype(np.float32)  # gemma: the weight is w in 1 + w
        elif k.endswith("bias"):
            x *= 0.3
        else:
            x *= 1.5 / np.sqrt(shape[-1])  # unit-ish activations, so attention patterns are far from uniform
        out[k] = x
    return out


def _k_quant_bytes(rows: int, cols: int, qtype: Any, g: np.random.Generator) -> np.ndarray:
    """Random blocks of a K-quant (gguf-py can dequantise but not quantise these) with sane float16 scales."""
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = g.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    scale = np.full((rows, cols // block), 0.02, np.float16).view(np.uint8).reshape(rows, cols // block, 2)
    if qtype == gguf.GGMLQuantizationType.Q4_K:  # d, dmin first
        raw[..., 0:2], raw[..., 2:4] = scale, scale
    else:  # Q6_K: d last
        raw[..., -2:] = scale
    return raw.reshape(rows, -1)


def write_gguf(path: Path, arch: str, sd: dict[str, np.ndarray]) -> None:
    """Write ``sd`` as llama.cpp's converter would, in the real Gemma file's mix of storage types:
    Q8_0 embeddings and values, Q5_0 Q/K/gate/up, Q4_K output projection, Q6_K down projection, F32 norms."""
    import gguf

    s = SHAPES[arch]
    q = gguf.GGMLQuantizationType
    g = np.random.default_rng(1)
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), s["layers"])
    w = gguf.GGUFWriter(path, arch=arch)
    w.add_block_count(s["layers"])
    w.add_embedding_length(s["d"])
    w.add_feed_forward_length(s["mlp"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv"])
    w.add_key_length(s["dh"])
    w.add_value_length(s["dh"])
    w.add_context_length(64)
    w.add_vocab_size(s["vocab"])
    w.add_rope_freq_base(1_000_000.0 if arch == "gemma3" else 10_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    if arch == "gemma3":
        w.add_sliding_window(WINDOW)
    for hf_name, arr in sd.items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert name is not None, hf_name
        if arch == "gemma3" and hf_name.endswith("norm.weight"):
            arr = arr + np.float32(1.0)  # llama.cpp stores Gemma's norms as 1 + w
        kind = q.F32
        if "embed_tokens" in hf_name or "v_proj.weight" in hf_name:
            kind = q.Q8_0
        elif any(k in hf_name for k in ("q_proj.weight", "k_proj.weight", "gate_proj", "up_proj")):
            kind = q.Q5_0
        elif "o_proj.weight" in hf_name and arr.shape[1] % 256 == 0:
            kind = q.Q4_K
        elif "down_proj" in hf_name and arr.shape[1] % 256 == 0:
            kind = q.Q6_K
        if kind == q.F32:
            w.add_tensor(name, np.ascontiguousarray(arr))
            continue
        raw = (_k_quant_bytes(*arr.shape, kind, g) if kind in (q.Q4_K, q.Q6_K)
               else gguf.quants.quantize(arr, kind))
        w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _load_both(tmp_path: Path, arch: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    path = tmp_path / f"{arch}.gguf"
    write_gguf(path, arch, hf_state(arch))
    with pytest.warns(UserWarning, match="no tokenizer"):  # the tiny file has no vocabulary
        ours = from_gguf(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32,
                                                      local_files_only=True, trust_remote_code=False).eval()
    return ours, theirs


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "gemma3"])
def test_logits_equal_transformers_gguf_loading(tmp_path: Path, arch: str) -> None:
    ours, theirs = _load_both(tmp_path, arch)
    tokens = torch.randint(0, SHAPES[arch]["vocab"], (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = theirs(tokens).logits
        got = ours(tokens)
        assert ref.std() > 0.5  # not a degenerate model whose logits would agree anyway
        assert float((got - ref).abs().max()) <= 1e-4


def test_gemma3_layout_is_read_as_llama_cpp_wrote_it(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "g.gguf"
    sd = hf_state("gemma3")
    write_gguf(path, "gemma3", sd)
    m = read_gguf(path)
    c = m.hf_config
    assert c["model_type"] == "gemma3_text" and c["tie_word_embeddings"] is True and "lm_head.weight" not in m.state_dict
    assert c["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
    assert c["sliding_window"] == WINDOW and c["query_pre_attn_scalar"] == 256.0
    assert c["rope_parameters"]["sliding_attention"]["rope_theta"] == 10_000.0
    assert c["rope_parameters"]["full_attention"]["rope_theta"] == 1_000_000.0
    for name in ("model.norm.weight", "model.layers.5.self_attn.k_norm.weight"):  # the +1 undone, in float32
        np.testing.assert_allclose(m.state_dict[name].numpy(), sd[name], atol=1e-6)
    assert m.tensor_types["model.layers.0.self_attn.o_proj.weight"] == "Q4_K"
    assert m.tensor_types["model.layers.0.mlp.down_proj.weight"] == "Q6_K"
    expected = gguf.quants.dequantize(gguf.quants.quantize(sd["model.layers.0.self_attn.q_proj.weight"],
                                                           gguf.GGMLQuantizationType.Q5_0), 6)
    np.testing.assert_array_equal(m.state_dict["model.layers.0.self_attn.q_proj.weight"].numpy(), expected)


def test_gemma3_config_becomes_local_and_global_layers(tmp_path: Path) -> None:
    path = tmp_path / "g.gguf"
    write_gguf(path, "gemma3", hf_state("gemma3"))
    with pytest.warns(UserWarning, match="no tokenizer"):
        m = from_gguf(path)
    a, p = m.cfg.attention, m.cfg.positional
    assert [a.is_local(i) for i in range(6)] == [True] * 5 + [False]
    assert (a.sliding_window, a.qk_norm, a.scale) == (WINDOW, True, 1 / 16)
    assert (p.rotary_base, p.local_rotary_base, m.cfg.embed_scale) == (1_000_000.0, 10_000.0, 8.0)
    assert m.cfg.norm.post_sublayer
    assert torch.equal(m.W_U, m.W_E.T)  # tied, and W_E keeps the file's (unscaled) values
    assert m.n_params() == sum(p.numel() for p in m.parameters()) - m.W_U.numel()
    names = set(m.hook_dict)
    assert {"blocks.0.ln1_post.hook_normalized", "blocks.0.ln2_post.hook_scale",
            "blocks.0.attn.q_norm.hook_normalized", "blocks.0.attn.k_norm.hook_scale"} <= names


def test_sliding_window_masks_old_keys_only_in_local_layers(tmp_path: Path) -> None:
    path = tmp_path / "g.gguf"
    write_gguf(path, "gemma3", hf_state("gemma3"))
    with pytest.warns(UserWarning):
        m = from_gguf(path)
    tokens = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(3))
    _, cache = m.run_with_cache(tokens, names=["blocks.0.attn.hook_pattern", "blocks.5.attn.hook_pattern"])
    local, full = cache["blocks.0.attn.hook_pattern"][0], cache["blocks.5.attn.hook_pattern"][0]
    q, k = torch.arange(10)[:, None], torch.arange(10)[None, :]
    assert float(local[:, (q - k >= WINDOW)].abs().max()) == 0.0
    assert float(local[:, (q - k < WINDOW) & (k <= q)].min()) > 0
    assert float(full[:, k <= q].min()) > 0  # the global layer sees everything before
    with torch.no_grad():  # the KV-cache path applies the same window: last-token logits equal
        from mechscope.models.components.attention import KVCache

        cache_kv = KVCache(m.cfg.n_layers)
        m(tokens[:, :6], past_kv=cache_kv)
        step = m(tokens[:, 6:], past_kv=cache_kv)
        torch.testing.assert_close(step[:, -1], m(tokens)[:, -1], atol=1e-5, rtol=0)


def test_unsupported_architectures_and_gemma_features_are_refused(tmp_path: Path) -> None:
    import gguf

    assert set(SUPPORTED_ARCHITECTURES) == {"llama", "qwen2", "qwen3", "gemma3"}
    path = tmp_path / "phi.gguf"
    w = gguf.GGUFWriter(path, arch="phi3")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelFileError, match="gemma3.*qwen2.*qwen3|supported: llama, qwen2, qwen3, gemma3"):
        read_gguf(path)
    from mechscope.models.adapters.gemma3 import config_from_hf

    base = {"hidden_size": 64, "num_attention_heads": 2, "num_hidden_layers": 6, "vocab_size": 64,
            "intermediate_size": 96, "sliding_window": 4}
    with pytest.raises(ConfigError, match="soft-capping"):
        config_from_hf({**base, "final_logit_softcapping": 30.0})
    with pytest.raises(ConfigError, match="rope_scaling"):
        config_from_hf({**base, "rope_scaling": {"rope_type": "linear", "factor": 8.0}})
    with pytest.raises(ConfigError, match="every N-th"):
        config_from_hf({**base, "layer_types": ["full_attention", "sliding_attention"] * 3})


@pytest.mark.parametrize("arch", ["gemma3", "qwen3"])
def test_from_hf_matches_transformers_on_every_shared_activation(arch: str) -> None:
    """The adapters on their own (no GGUF): random transformers models, norms far from their defaults."""
    import transformers

    from mechscope.models.loading import from_hf
    from mechscope.models.parity import compare_to_hf

    torch.manual_seed(0)
    common = {"vocab_size": 50, "hidden_size": 32, "intermediate_size": 48, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 64}
    if arch == "gemma3":
        cfg = transformers.Gemma3TextConfig(**common, num_hidden_layers=3, query_pre_attn_scalar=20, sliding_window=4,
                                            sliding_window_pattern=3, rope_parameters={
                                                "full_attention": {"rope_type": "default", "rope_theta": 1e5},
                                                "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}})
        hf: Any = transformers.Gemma3ForCausalLM(cfg).eval()
    else:
        hf = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common, num_hidden_layers=2)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.normal_(0.0, 0.5 if "norm" in name else 0.3)
    ours = from_hf(hf)
    report = compare_to_hf(ours, hf, torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1)))
    assert report.logit_scale > 1.0 and report.logits_max_abs <= 1e-5, report.to_dict()
    assert len(report.hooks) == ours.cfg.n_layers * 10
    assert report.worst_hook[1] <= 1e-5, report.worst_hook


def test_named_gemma_is_assembled_by_its_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``load("gemma3-270m")`` asks the chunk package to join its parts; failures name the install command."""
    import sys

    from mechscope.errors import ModelNotInstalledError
    from mechscope.models import registry

    assert registry.resolve("Gemma3").name == "gemma3-270m"
    pkg = tmp_path / "fake_gemma_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"def assemble():\n    return {str(tmp_path / 'joined.gguf')!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = registry.NamedModel(name="gemma3-270m", aliases=(), package="fake_gemma_pkg", filename="x.gguf",
                               install="pip install fake", description="", assembled_by="assemble")
    monkeypatch.setattr(registry, "MODELS", (fake,))
    with pytest.raises(ModelNotInstalledError, match="not a file; reinstall with `pip install fake`"):
        registry.locate_gguf("gemma3-270m")
    (tmp_path / "joined.gguf").write_bytes(b"GGUF")
    assert registry.locate_gguf("gemma3-270m") == tmp_path / "joined.gguf"
    monkeypatch.delitem(sys.modules, "fake_gemma_pkg")
    (pkg / "__init__.py").write_text("def assemble():\n    raise FileNotFoundError('Missing chunk files: part2')\n")
    with pytest.raises(ModelNotInstalledError, match="could not be assembled.*part2.*pip install fake"):
        registry.locate_gguf("gemma3-270m")


def test_configs_without_the_new_features_serialise_as_before() -> None:
    """Fields added for Gemma/Qwen3 are left out of ``to_dict`` at their defaults, so runs and saved models
    made before them keep their identity (a resumed training run compares these dicts)."""
    from mechscope.models.config import AttentionConfig, ModelConfig, NormConfig, PositionalConfig

    old = {"d_model": 8, "n_layers": 1, "d_vocab": 4, "n_ctx": 4,
           "attention": {"n_heads": 2, "d_head": 4, "n_kv_heads": None, "qkv_bias": False, "out_bias": False,
                         "scale": None},
           "mlp": None, "norm": {"kind": "layernorm", "eps": 1e-05, "bias": True},
           "positional": {"kind": "learned", "rotary_dim": None, "rotary_base": 10000.0},
           "parallel_attn_mlp": False, "unembed_bias": False, "d_vocab_out": None, "name": "custom",
           "architecture": "custom", "format_version": 1}
    cfg = ModelConfig.from_dict(old)
    assert cfg.to_dict() == old
    new = cfg.replace(embed_scale=2.0, norm=NormConfig(post_sublayer=True),
                      attention=AttentionConfig(n_heads=2, d_head=4, qk_norm=True, sliding_window=3, global_every=2),
                      positional=PositionalConfig(kind="rotary", local_rotary_base=100.0))
    d = new.to_dict()
    assert (d["embed_scale"], d["norm"]["post_sublayer"], d["attention"]["global_every"]) == (2.0, True, 2)
    assert ModelConfig.from_dict(d) == new
    with pytest.raises(ConfigError, match="global_every"):
        AttentionConfig(n_heads=2, d_head=4, global_every=2)  # without a window
