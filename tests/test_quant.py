"""weightgen hf --quantize: checkpoints in the formats they ship in (fp8-block, mxfp4).

Oracles: the stored bytes are the format's quantizer (quant/kernels.py, itself compared with
the reference quantizers in test_quant_kernels.py) applied to jax.nn.initializers' float32
draw of the whole tensor; transformers 5.24.0 (with accelerate) loads the folders on CPU with
no missing or unexpected keys, and its dequantized weights equal weightgen's dequantization.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from conftest import TRANSFORMERS_ENV, reference, run_client

import weightgen
from weightgen import quant
from weightgen.quant import kernels
from weightgen.specfile import parse_spec

HERE = Path(__file__).parent
CONFIGS = HERE / "data" / "hf_configs"


def published(name: str, **cut) -> dict:
    """A published config (quantization_config and all), cut to a tiny size."""
    config = json.loads((CONFIGS / name).read_text())
    config.update(cut)
    return config


# Whole 128x128 blocks everywhere (transformers' CPU dequantization infers the block from
# the grid: see DESIGN.md), kv_a_proj_with_mqa included (kv_lora_rank + rope = 128).
DEEPSEEK = published(
    "deepseek-v3.json",
    vocab_size=256,
    hidden_size=256,
    intermediate_size=384,
    moe_intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    q_lora_rank=128,
    kv_lora_rank=64,
    qk_nope_head_dim=64,
    qk_rope_head_dim=64,
    v_head_dim=64,
    n_routed_experts=4,
    num_experts_per_tok=2,
    n_group=1,
    topk_group=1,
    first_k_dense_replace=1,
    bos_token_id=0,
    eos_token_id=1,
)
GPT_OSS = published(
    "gpt-oss-20b.json",
    vocab_size=256,
    hidden_size=128,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=64,
    num_local_experts=4,
    num_experts_per_tok=2,
    layer_types=["sliding_attention", "full_attention"],
    pad_token_id=255,
    eos_token_id=254,
    bos_token_id=253,
)


LLAMA = published(
    "llama-3.2-1b.json",
    vocab_size=256,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=64,
    tie_word_embeddings=False,
    bos_token_id=0,
    eos_token_id=1,
)


# As llm-compressor publishes a W4A16 model: one layer's attention kept (an `re:` ignore).
LLAMA_W4A16 = {
    **LLAMA,
    "quantization_config": {
        **weightgen.model_spec(LLAMA, quantize="ct-w4a16")["hf_config"]["quantization_config"],
        "ignore": ["lm_head", "re:.*layers\\.0\\.self_attn\\.[qk]_proj$"],
    },
}

# Qwen3-30B-A3B's published config (Qwen3-30B-A3B-FP8 is the same with an fp8
# quantization_config), written with the explicit format.
QWEN3_MOE = published(
    "qwen3-30b-a3b.json",
    vocab_size=256,
    hidden_size=256,
    intermediate_size=384,
    moe_intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=128,
    num_experts=4,
    num_experts_per_tok=2,
    bos_token_id=0,
    eos_token_id=1,
)


def quantized_names(spec: dict) -> set[str]:
    return {n for n, e in spec["tensors"].items() if "quantize" in e}


def test_published_fp8_quantizes_the_linear_layers_and_keeps_the_rest():
    spec = weightgen.model_spec(DEEPSEEK, quantize="published")
    assert spec["quantize"] == {"format": "fp8-block", "block": [128, 128]}
    assert spec["hf_config"]["quantization_config"] == DEEPSEEK["quantization_config"]
    names = quantized_names(spec)
    kept = set(spec["tensors"]) - names
    assert "model.layers.0.self_attn.kv_a_proj_with_mqa.weight" in names
    assert "model.layers.1.mlp.experts.3.down_proj.weight" in names
    assert "model.layers.1.mlp.shared_experts.up_proj.weight" in names
    # What the published checkpoint keeps unquantized: embedding, head, norms, the router.
    assert all(
        n.endswith(("layernorm.weight", "norm.weight", "e_score_correction_bias"))
        or n in ("model.embed_tokens.weight", "lm_head.weight")
        or n.endswith("mlp.gate.weight")
        for n in kept
    ), kept
    for name in names:
        entry = spec["tensors"][name]
        assert entry["dtype"] == entry["sample_dtype"] == "float32"
        assert entry["init"] == "normal" and entry["stddev"] == 0.02
    plan = parse_spec(spec).plan
    stored = {t.name: (t.dtype.name, t.shape) for t in plan.tensors}
    assert stored["model.layers.0.self_attn.o_proj.weight"] == ("float8_e4m3fn", (256, 128))
    assert stored["model.layers.0.self_attn.o_proj.weight_scale_inv"] == ("float32", (2, 1))


def test_published_modules_to_not_convert_are_left_alone():
    """As transformers matches them: a regex up to a module boundary, or a suffix."""
    config = json.loads(json.dumps(DEEPSEEK))
    keep = ["model.layers.0.self_attn", "experts.1.up_proj", "model.layers.1.mlp.shared_exp"]
    config["quantization_config"]["modules_to_not_convert"] = keep
    spec = weightgen.model_spec(config, quantize="published")
    names = quantized_names(spec)
    assert not [n for n in names if n.startswith("model.layers.0.self_attn.")]
    assert "model.layers.1.mlp.experts.1.up_proj.weight" not in names
    assert "model.layers.1.mlp.experts.1.gate_proj.weight" in names
    assert "model.layers.1.mlp.shared_experts.up_proj.weight" in names  # no boundary
    assert "model.layers.1.self_attn.o_proj.weight" in names
    assert spec["hf_config"]["quantization_config"]["modules_to_not_convert"] == keep


def test_published_compressed_tensors_keeps_its_ignore_list():
    spec = weightgen.model_spec(LLAMA_W4A16, quantize="published")
    assert spec["quantize"] == {"format": "ct-w4a16", "scale_dtype": "bfloat16"}
    names = quantized_names(spec)
    assert "model.layers.0.self_attn.q_proj.weight" not in names
    assert "model.layers.0.self_attn.k_proj.weight" not in names
    assert "model.layers.0.self_attn.v_proj.weight" in names
    assert "model.layers.1.self_attn.q_proj.weight" in names
    qc = spec["hf_config"]["quantization_config"]
    assert qc == LLAMA_W4A16["quantization_config"]


def test_mxfp4_quantizes_the_fused_experts_only():
    spec = weightgen.model_spec(GPT_OSS, quantize="published")
    assert quantized_names(spec) == {
        f"model.layers.{i}.mlp.experts.{p}" for i in range(2) for p in ("gate_up_proj", "down_proj")
    }
    assert spec["hf_config"]["quantization_config"] == GPT_OSS["quantization_config"]
    stored = {t.name: (t.dtype.name, t.shape) for t in parse_spec(spec).plan.tensors}
    experts = "model.layers.0.mlp.experts."
    assert stored[experts + "gate_up_proj_blocks"] == ("uint8", (4, 128, 4, 16))
    assert stored[experts + "gate_up_proj_scales"] == ("uint8", (4, 128, 4))
    assert stored[experts + "down_proj_blocks"] == ("uint8", (4, 128, 2, 16))
    assert experts + "gate_up_proj" not in stored


def _logical(spec: dict, name: str):
    """The logical TensorSpec of a quantized weight, as the parser made it."""
    for t in parse_spec(spec).plan.tensors:
        if t.quant is not None and t.quant.logical.name == name:
            return t.quant.logical
    raise KeyError(name)


@pytest.mark.parametrize(
    ("config", "quantize", "name"),
    [
        (DEEPSEEK, "published", "model.layers.1.mlp.experts.2.gate_proj.weight"),
        (DEEPSEEK, "published", "model.layers.0.mlp.down_proj.weight"),
        (GPT_OSS, "published", "model.layers.1.mlp.experts.gate_up_proj"),
        (LLAMA, "ct-fp8", "model.layers.1.mlp.up_proj.weight"),
        (LLAMA, "ct-w4a16", "model.layers.0.self_attn.k_proj.weight"),
        (LLAMA, "ct-nvfp4", "model.layers.0.self_attn.k_proj.weight"),
        (LLAMA, "ct-nvfp4", "model.layers.1.mlp.down_proj.weight"),
    ],
)
def test_stored_bytes_are_the_quantizer_of_the_jax_draw(tmp_path, config, quantize, name):
    """Band by band, through the engine, the bytes equal the kernel applied to JAX's own
    draw of the whole tensor in float32."""
    spec = weightgen.model_spec(config, quantize=quantize, dtype="bfloat16")
    folder = tmp_path / "out"
    weightgen.write_parsed(parse_spec(spec), folder, manifest=True, chunk_size=1000)
    written = weightgen.load(folder)
    drawn = reference(_logical(spec, name))
    assert drawn.dtype == np.float32
    if "experts.gate_up_proj" in name:
        blocks, scales = kernels.mxfp4(np.swapaxes(drawn, -1, -2).copy())
        assert written[name + "_blocks"].tobytes() == blocks.tobytes()
        assert written[name + "_scales"].tobytes() == scales.tobytes()
    elif quantize == "ct-fp8":
        q, scale = kernels.ct_fp8(drawn, scale_dtype="bfloat16")
        assert written[name].tobytes() == q.tobytes()
        assert written[name + "_scale"].dtype == ml_dtypes.bfloat16
        assert written[name + "_scale"].tobytes() == scale.tobytes()
        assert spec["hf_config"]["quantization_config"]["ignore"] == ["lm_head"]
    elif quantize == "ct-w4a16":
        packed, scale = kernels.ct_w4a16(drawn, scale_dtype="bfloat16")
        assert written[name + "_packed"].tobytes() == packed.tobytes()
        assert written[name + "_scale"].tobytes() == scale.tobytes()
        assert written[name + "_shape"].tolist() == list(drawn.shape)
        assert written[name + "_shape"].dtype == np.int64 and name not in written
    elif quantize == "ct-nvfp4":
        # The global scale is the fused group's (q/k/v share one); down_proj has its own.
        fused = spec["tensors"][name].get("fused")
        members = [n for n, e in spec["tensors"].items() if fused and e.get("fused") == fused]
        assert len(members) == (3 if "k_proj" in name else 0), members
        draws = [reference(_logical(spec, n)) for n in members] or [drawn]
        g = kernels.nvfp4_global_scale(max(kernels.absmax(d) for d in draws))
        packed, scale = kernels.ct_nvfp4(drawn, g)
        assert written[name + "_packed"].tobytes() == packed.tobytes()
        assert written[name + "_scale"].dtype == ml_dtypes.float8_e4m3fn
        assert written[name + "_scale"].tobytes() == scale.tobytes()
        assert written[name + "_global_scale"].dtype == np.float32
        for member in members or [name]:
            assert written[member + "_global_scale"].tolist() == [g], member
        assert name not in written
    else:
        q, scale_inv = kernels.fp8_block(drawn)
        assert written[name].dtype == q.dtype and written[name].tobytes() == q.tobytes()
        assert written[name + "_scale_inv"].tobytes() == scale_inv.tobytes()


PARTIAL_SPEC = {
    "seed": 3,
    "quantize": {"format": "fp8-block", "block": [128, 128]},
    "tensors": {
        # 320 x 200: partial blocks on both axes, as DeepSeek-V3's kv_a_proj_with_mqa (576).
        "a.weight": {"init": "truncated-normal", "shape": [320, 200], "quantize": "fp8-block"},
        "b.weight": {"init": "normal", "shape": [64, 64], "stddev": 0.5},
    },
}


def _run(tmp_path: Path, name: str, spec: dict, **options) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / f"{name}.safetensors"
    weightgen.run_spec(str(path), out, manifest=True, **options)
    return out


def test_partial_blocks_any_chunk_size_and_device_count(tmp_path):
    first = _run(tmp_path, "one", PARTIAL_SPEC)
    again = _run(tmp_path, "two", PARTIAL_SPEC, chunk_size=777, devices="cpu:0,1,2")
    assert first.read_bytes() == again.read_bytes()
    logical = _logical(PARTIAL_SPEC, "a.weight")
    q, scale_inv = kernels.fp8_block(reference(logical))
    written = weightgen.load(first)
    assert written["a.weight"].tobytes() == q.tobytes()
    assert written["a.weight_scale_inv"].shape == (3, 2)
    assert written["a.weight_scale_inv"].tobytes() == scale_inv.tobytes()
    assert written["b.weight"].dtype == np.float32  # not quantized: as today


def test_manifest_records_one_entry_replays_and_verifies(tmp_path, run_cli):
    out = _run(tmp_path, "m", PARTIAL_SPEC)
    manifest_path = Path(f"{out}.manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["quantize"] == {"format": "fp8-block", "block": [128, 128]}
    entry = manifest["tensors"]["a.weight"]
    assert entry["quantize"] == "fp8-block" and entry["shape"] == [320, 200]
    assert entry["init"] == "truncated-normal" and entry["dtype"] == "float32"
    assert set(entry["stored"]) == {"a.weight", "a.weight_scale_inv"}
    assert entry["stored"]["a.weight_scale_inv"]["shape"] == [3, 2]
    assert "a.weight_scale_inv" not in manifest["tensors"]
    replayed = tmp_path / "replayed.safetensors"
    assert run_cli("run", str(manifest_path), "-o", str(replayed), "-q").code == 0
    assert replayed.read_bytes() == out.read_bytes()
    assert weightgen.verify(manifest_path, out) == []
    # One scale changed: verify names the stored tensor.
    data = bytearray(out.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    layout = json.loads(data[8:header])["a.weight_scale_inv"]["data_offsets"]
    data[header + layout[0]] ^= 1
    out.write_bytes(bytes(data))
    problems = weightgen.verify(manifest_path, out)
    assert [p.tensor for p in problems] == ["a.weight_scale_inv"], problems


def test_inspect_shows_dequantized_stats_and_marks_invalid_scales(tmp_path, run_cli):
    out = _run(tmp_path, "i", PARTIAL_SPEC)
    result = run_cli("inspect", str(out), "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    entry = next(t for t in report["quantized"] if t["name"] == "a.weight")
    assert entry["format"] == "fp8-block" and entry["invalid_scales"] == 0
    # JAX's truncated_normal (stddev 0.01, cut at +-2 stddev) has std 0.01 x 0.87962.
    assert entry["expected"]["std"] == pytest.approx(0.0087962, rel=1e-4)
    assert entry["std"] == pytest.approx(0.0087962, rel=0.02) and entry["off"] == ""
    data = bytearray(out.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    start = json.loads(data[8:header])["a.weight_scale_inv"]["data_offsets"][0]
    data[header + start : header + start + 4] = np.float32(np.nan).tobytes()
    out.write_bytes(bytes(data))
    report = json.loads(run_cli("inspect", str(out), "--json").stdout)
    entry = next(t for t in report["quantized"] if t["name"] == "a.weight")
    assert entry["invalid_scales"] == 1 and "1 invalid scales" in entry["off"]


# Two weights sharing a global scale (a fused group), one with its own: rows not a multiple
# of the 128-row band, so bands and chunks cut them anywhere.
NVFP4_SPEC = {
    "seed": 5,
    "quantize": {"format": "ct-nvfp4"},
    "tensors": {
        "a.q_proj.weight": {
            "init": "normal",
            "shape": [200, 48],
            "stddev": 0.02,
            "quantize": "ct-nvfp4",
            "fused": "a.qk",
        },
        "a.k_proj.weight": {
            "init": "normal",
            "shape": [72, 48],
            "stddev": 0.5,  # the group's maximum: it sets q_proj's global scale
            "quantize": "ct-nvfp4",
            "fused": "a.qk",
        },
        "a.o_proj.weight": {"init": "truncated-normal", "shape": [48, 64], "quantize": "ct-nvfp4"},
    },
}


def test_nvfp4_any_chunk_size_and_device_count_fused_global_scale(tmp_path):
    first = _run(tmp_path, "one", NVFP4_SPEC)
    again = _run(tmp_path, "two", NVFP4_SPEC, chunk_size=777, devices="cpu:0,1,2")
    assert first.read_bytes() == again.read_bytes()
    written = weightgen.load(first)
    q, k, o = (reference(_logical(NVFP4_SPEC, f"a.{n}_proj.weight")) for n in "qko")
    shared = kernels.nvfp4_global_scale(max(kernels.absmax(q), kernels.absmax(k)))
    own = kernels.nvfp4_global_scale(kernels.absmax(o))
    assert shared == kernels.nvfp4_global_scale(kernels.absmax(k)) != own
    for name, drawn, g in (("q", q, shared), ("k", k, shared), ("o", o, own)):
        packed, scale = kernels.ct_nvfp4(drawn, g)
        assert written[f"a.{name}_proj.weight_global_scale"].tolist() == [g]
        assert written[f"a.{name}_proj.weight_packed"].tobytes() == packed.tobytes()
        assert written[f"a.{name}_proj.weight_scale"].tobytes() == scale.tobytes()


def test_nvfp4_matches_compressed_tensors_with_llm_compressors_fused_scale(tmp_path):
    """compressed-tensors' own path on weightgen's float32 draws: generate_gparam per
    weight, the minimum over the fused group (llm-compressor's
    update_fused_layer_weight_global_scales), calculate_qparams, then the NVFP4A16
    compressor: the same bytes as the folder."""
    import torch
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import preset_name_to_scheme
    from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam

    spec = weightgen.model_spec(LLAMA, quantize="ct-nvfp4", dtype="bfloat16")
    folder = tmp_path / "out"
    weightgen.write_parsed(parse_spec(spec), folder, chunk_size=5000)
    written = weightgen.load(folder)
    scheme = preset_name_to_scheme("NVFP4A16", ["Linear"])
    compressor = BaseCompressor.get_value_from_registry("nvfp4-pack-quantized")
    layer = "model.layers.1."
    for group in (["q_proj", "k_proj", "v_proj"], ["gate_proj", "up_proj"], ["o_proj"]):
        names = [
            next(n for n in spec["tensors"] if n.startswith(layer) and n.endswith(f".{m}.weight"))
            for m in group
        ]
        weights = [torch.from_numpy(reference(_logical(spec, n)).copy()) for n in names]
        g = torch.min(torch.cat([generate_gparam(w.amin(), w.amax()) for w in weights]))
        for name, w in zip(names, weights):
            view = w.unflatten(-1, (-1, 16))
            scale, _ = calculate_qparams(
                view.amin(dim=-1), view.amax(dim=-1), scheme.weights, global_scale=g
            )
            state = {"weight": w, "weight_scale": scale, "weight_global_scale": g.reshape(1)}
            ref = compressor.compress(state, scheme)
            assert set(ref) == {"weight_packed", "weight_scale", "weight_global_scale"}
            for key in ref:
                ours = written[name.removesuffix("weight") + key]
                theirs = ref[key].contiguous()
                assert list(ours.shape) == list(theirs.shape), (name, key)
                assert ours.tobytes() == theirs.view(torch.uint8).numpy().tobytes(), (name, key)


def test_nvfp4_manifest_records_fused_replays_and_verifies(tmp_path, run_cli):
    out = _run(tmp_path, "m", NVFP4_SPEC)
    manifest_path = Path(f"{out}.manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["quantize"] == {"format": "ct-nvfp4"}
    entry = manifest["tensors"]["a.k_proj.weight"]
    assert entry["fused"] == "a.qk" and "fused" not in manifest["tensors"]["a.o_proj.weight"]
    assert set(entry["stored"]) == {
        f"a.k_proj.weight{s}" for s in ("_packed", "_scale", "_global_scale")
    }
    assert entry["stored"]["a.k_proj.weight_global_scale"]["shape"] == [1]
    replayed = tmp_path / "replayed.safetensors"
    result = run_cli("run", str(manifest_path), "-o", str(replayed), "-q", "--chunk-size", "999")
    assert result.code == 0, result.stderr
    assert replayed.read_bytes() == out.read_bytes()
    assert weightgen.verify(manifest_path, out) == []
    # A manifest whose fused label was dropped makes another global scale: replay says so.
    manifest["tensors"]["a.q_proj.weight"].pop("fused")
    manifest["tensors"]["a.k_proj.weight"].pop("fused")
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(manifest))
    result = run_cli("run", str(edited), "-o", str(tmp_path / "edited.safetensors"))
    assert result.code != 0 and "a.q_proj.weight_" in result.stderr, result.stderr
    data = bytearray(out.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    layout = json.loads(data[8:header])["a.o_proj.weight_global_scale"]["data_offsets"]
    data[header + layout[0]] ^= 1
    out.write_bytes(bytes(data))
    problems = weightgen.verify(manifest_path, out)
    assert [p.tensor for p in problems] == ["a.o_proj.weight_global_scale"], problems
    report = json.loads(run_cli("inspect", str(replayed), "--json").stdout)
    entry = next(t for t in report["quantized"] if t["name"] == "a.o_proj.weight")
    assert entry["format"] == "ct-nvfp4" and entry["invalid_scales"] == 0 and entry["off"] == ""


def test_published_nvfp4a16_is_ct_nvfp4_and_w4a4_is_refused(tmp_path, run_cli):
    written = weightgen.model_spec(LLAMA, quantize="ct-nvfp4")["hf_config"]["quantization_config"]
    config = {**LLAMA, "quantization_config": {**written, "ignore": ["lm_head"]}}
    spec = weightgen.model_spec(config, quantize="published")
    assert spec["quantize"] == {"format": "ct-nvfp4"}
    assert spec["hf_config"]["quantization_config"] == config["quantization_config"]
    assert spec["tensors"]["model.layers.0.mlp.up_proj.weight"]["fused"] == (
        "model.layers.0.mlp.gate_proj+up_proj"
    )
    group = dict(written["config_groups"]["group_0"])
    group["input_activations"] = {**group["weights"], "dynamic": "local"}  # NVFP4 (W4A4)
    w4a4 = {**config["quantization_config"], "config_groups": {"group_0": group}}
    path = tmp_path / "w4a4.json"
    path.write_text(json.dumps({**LLAMA, "quantization_config": w4a4}))
    result = run_cli("hf", str(path), "--quantize", "published", "--spec")
    assert result.code == 2 and "input_global_scale" in result.stderr, result.stderr
    assert "--quantize ct-nvfp4" in result.stderr and result.stderr.count("\n") == 1


def test_nvfp4_fused_only_where_every_sibling_is_quantized():
    """A module left alone (ignore) leaves its siblings their own global scales, as
    llm-compressor does; MLA's q_a/kv_a share one."""
    config = {
        **LLAMA,
        "quantization_config": {
            **weightgen.model_spec(LLAMA, quantize="ct-nvfp4")["hf_config"]["quantization_config"],
            "ignore": ["lm_head", "model.layers.0.self_attn.q_proj"],
        },
    }
    tensors = weightgen.model_spec(config, quantize="published")["tensors"]
    assert "fused" not in tensors["model.layers.0.self_attn.k_proj.weight"]
    assert tensors["model.layers.1.self_attn.k_proj.weight"]["fused"] == (
        "model.layers.1.self_attn.q_proj+k_proj+v_proj"
    )
    deepseek = weightgen.model_spec(DEEPSEEK, quantize="ct-nvfp4")["tensors"]
    attn = "model.layers.0.self_attn."
    assert (
        deepseek[attn + "q_a_proj.weight"]["fused"]
        == (deepseek[attn + "kv_a_proj_with_mqa.weight"]["fused"])
    )
    assert "fused" not in deepseek[attn + "kv_b_proj.weight"]
    experts = "model.layers.1.mlp.experts.3."
    assert deepseek[experts + "gate_proj.weight"]["fused"] == experts + "gate_proj+up_proj"


@pytest.mark.parametrize(
    ("spec", "name", "fused", "message"),
    [
        (PARTIAL_SPEC, "a.weight", "g", "fp8-block has no global scale to share"),
        (PARTIAL_SPEC, "b.weight", "g", "only a quantized weight shares a global scale"),
        (NVFP4_SPEC, "a.o_proj.weight", 7, "fused must be a non-empty string"),
    ],
)
def test_bad_fused_label_is_refused(tmp_path, run_cli, spec, name, fused, message):
    spec = json.loads(json.dumps(spec))
    spec["tensors"][name]["fused"] = fused
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    result = run_cli("run", str(path), "-o", str(tmp_path / "x.safetensors"))
    assert result.code == 2, result.stderr
    assert result.stderr.startswith("weightgen: error:") and message in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize(
    ("spec_change", "message"),
    [
        ({"quantize": None}, "no top-level 'quantize'"),
        ({"quantize": {"format": "fp4-magic"}}, "unknown format 'fp4-magic'"),
        ({"quantize": {"format": "fp8-block", "block": [0, 128]}}, "block must be two"),
        ({"quantize": {"format": "mxfp4"}}, "the spec's format is 'mxfp4'"),
    ],
)
def test_bad_quantize_in_a_spec_is_refused(tmp_path, run_cli, spec_change, message):
    spec = {**PARTIAL_SPEC, **spec_change}
    if spec["quantize"] is None:
        del spec["quantize"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    result = run_cli("run", str(path), "-o", str(tmp_path / "x.safetensors"))
    assert result.code == 2, result.stderr
    assert result.stderr.startswith("weightgen: error:") and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_hf_quantize_refusals(tmp_path, run_cli):
    plain = CONFIGS / "llama-3.2-1b.json"
    result = run_cli("hf", str(plain), "--quantize", "published", "--spec")
    assert result.code == 2 and "has no quantization_config" in result.stderr
    oss = tmp_path / "oss.json"
    oss.write_text(json.dumps({**GPT_OSS, "hidden_size": 80}))  # not a multiple of 32
    result = run_cli("hf", str(oss), "--quantize", "mxfp4", "-o", str(tmp_path / "o"))
    assert result.code == 2 and "not a multiple of 32" in result.stderr, result.stderr
    assert not (tmp_path / "o").exists()
    result = run_cli("hf", str(oss), "--quantize", "int3", "--spec")
    assert result.code == 2 and "int3" in result.stderr
    result = run_cli("hf", str(oss), "--quantize", "mxfp4", "--from-transformers", "--spec")
    assert result.code == 2 and "drop --from-transformers" in result.stderr
    ct = tmp_path / "ct.json"
    ct.write_text(json.dumps({**LLAMA, "quantization_config": {"quant_method": "awq"}}))
    result = run_cli("hf", str(ct), "--quantize", "published", "--spec")
    assert result.code == 2 and "quant_method 'awq' is not one" in result.stderr
    for bad in (result,):
        assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_without_quantize_the_note_names_quantize_published(tmp_path, run_cli):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(DEEPSEEK))
    result = run_cli("hf", str(path), "--spec")
    assert result.code == 0
    assert "--quantize published" in result.stderr
    spec = json.loads(result.stdout)
    assert "quantize" not in spec and "quantization_config" not in spec["hf_config"]
    assert not quantized_names(spec)


def test_spec_of_the_full_published_configs_is_fast():
    """--quantize published on the full DeepSeek-V3 and Kimi-K2: spec and plan in seconds."""
    import time

    for name in ("deepseek-v3.json", "kimi-k2-instruct.json"):
        started = time.perf_counter()
        spec = weightgen.model_spec(published(name), quantize="published")
        plan = parse_spec(spec).plan
        assert time.perf_counter() - started < 60
        kv = [t for t in plan.tensors if t.name.endswith("kv_a_proj_with_mqa.weight_scale_inv")]
        assert kv and kv[0].shape == (5, 56)  # 576 rows: the published grid, a partial block


# --- transformers loads them -------------------------------------------------------------


def _dequantized(folder: Path, spec: dict) -> dict[str, np.ndarray]:
    """weightgen's own dequantization of every quantized weight of a folder (float32)."""
    scheme = quant.scheme_of(spec["quantize"])
    files = weightgen.load(folder)
    out = {}
    for name in quantized_names(spec):
        shape = tuple(spec["tensors"][name]["shape"])
        parts = {
            suffix: files[stored].reshape(-1)
            for stored, _, _, part in scheme.stored(name, shape)
            for suffix in [part.suffix]
        }
        out[name] = scheme.dequantize(parts, shape)
    return out


def _loaded_name(name: str) -> str:
    return name


@pytest.mark.slow
def test_transformers_loads_them_and_dequantizes_as_weightgen(tmp_path):
    specs, jobs = {}, []
    for label, config, quantize in (
        ("deepseek", DEEPSEEK, "published"),
        ("gpt_oss", GPT_OSS, "published"),
        ("llama-ct-fp8", LLAMA, "ct-fp8"),
        ("llama-ct-w4a16", LLAMA, "ct-w4a16"),
        ("llama-ct-nvfp4", LLAMA, "ct-nvfp4"),
        ("qwen3_moe", QWEN3_MOE, "fp8-block"),
        ("llama-ct-published", LLAMA_W4A16, "published"),
    ):
        spec = weightgen.model_spec(config, quantize=quantize, dtype="bfloat16")
        folder = tmp_path / label
        weightgen.write_parsed(parse_spec(spec), folder, manifest=True)
        specs[label] = (folder, spec)
        jobs.append({"folder": str(folder), "out": str(tmp_path / f"{label}.loaded.safetensors")})
    reports = run_client(
        HERE / "quant_client.py", jobs, tmp_path / "jobs.json", None, **TRANSFORMERS_ENV
    )
    from safetensors.numpy import load_file

    for (label, (folder, spec)), job, report in zip(specs.items(), jobs, reports):
        info = report["info"]
        assert info["missing_keys"] == [] and info["unexpected_keys"] == [], (label, info)
        assert info.get("mismatched_keys", []) == [], (label, info)
        assert report["finite"], label
        loaded = load_file(job["out"])
        ours = _dequantized(folder, spec)
        files = weightgen.load(folder)
        compared = 0
        fused_layers = set()
        for name, values in ours.items():
            # transformers 5 fuses each layer's experts: gate and up on the rows, [E, 2I, H].
            if ".experts." in name and label != "gpt_oss":
                fused_layers.add(name.split(".experts.")[0] + ".experts.")
                continue
            if "-ct-" in label:
                # compressed-tensors multiplies in the scale's dtype (bfloat16): the exact
                # float32 product, rounded once.
                values = values.astype(ml_dtypes.bfloat16).astype(np.float32)
            assert np.array_equal(loaded[name], values), name
            compared += 1
        for layer in sorted(fused_layers):
            experts = range(len({n for n in ours if n.startswith(layer)}) // 3)
            gate_up = np.stack(
                [
                    np.concatenate(
                        [ours[f"{layer}{e}.gate_proj.weight"], ours[f"{layer}{e}.up_proj.weight"]]
                    )
                    for e in experts
                ]
            )
            down = np.stack([ours[f"{layer}{e}.down_proj.weight"] for e in experts])
            assert np.array_equal(loaded[layer + "gate_up_proj"], gate_up)
            assert np.array_equal(loaded[layer + "down_proj"], down)
            compared += 2
        assert compared >= 4, (label, compared)
        # The unquantized tensors load as written (bfloat16 in the file, float32 loaded).
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert np.array_equal(loaded[name], files[name].astype(np.float32)), name
        # The dequantized weights follow the rule within quantization and sampling error.
        for name, values in ours.items():
            std = spec["tensors"][name]["stddev"]
            assert abs(values.std() / std - 1) < 0.05, (name, values.std())


TINY = HERE / "data" / "hf_tiny"


@pytest.mark.parametrize(
    ("config", "quantize"),
    [
        (TINY / "llama.json", "fp8-block"),
        (TINY / "llama.json", "ct-fp8"),
        (TINY / "llama.json", "ct-nvfp4"),
        (TINY / "gpt_oss-tied-mxfp4.json", "published"),
    ],
)
def test_a_quantized_folder_replays_and_verifies_past_the_config_check(
    tmp_path, run_cli, config, quantize
):
    """A quantized folder's manifest, and its spec, carry an hf_config: the config check
    takes each quantized weight as the tensor it stands for, so run and verify accept it."""
    first, again, from_spec = tmp_path / "q", tmp_path / "again", tmp_path / "from-spec"
    result = run_cli("hf", str(config), "-o", str(first), "--quantize", quantize, "-q")
    assert result.code == 0, result.stderr
    assert run_cli("verify", str(first)).code == 0
    manifest = first / "weightgen.manifest.json"
    result = run_cli("run", str(manifest), "-o", str(again), "-q")
    assert result.code == 0, result.stderr
    assert run_cli("verify", str(again)).code == 0
    for path in first.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
    spec = tmp_path / "m.json"
    result = run_cli("hf", str(config), "--spec", "--quantize", quantize)
    spec.write_text(result.stdout)
    assert run_cli("run", str(spec), "-o", str(from_spec), "-q").code == 0
    written = weightgen.write_model(config, tmp_path / "lib", quantize=quantize)
    assert weightgen.verify(None, written.path) == []


def test_a_format_that_would_quantize_nothing_is_refused(tmp_path, run_cli):
    result = run_cli(
        "hf", str(TINY / "llama.json"), "--quantize", "mxfp4", "-o", str(tmp_path / "o")
    )
    assert result.code == 2
    assert "mxfp4 quantizes expert_in, expert_out" in result.stderr
    assert "nothing would be quantized" in result.stderr
    assert not (tmp_path / "o").exists()
