"""Whole models from config.json, checked with the real client: transformers itself.

Every family's tiny config goes through weightgen into a folder (bfloat16 in one file,
float32 in shards), which the newest transformers 5.x and 4.57.6 (the last 4.x) each load in
a process of their own (tests/hf_client.py): no missing, unexpected or mismatched keys, the
file's dtype, tied weights sharing storage, finite logits. Names and shapes of real
published configs (tests/data/hf_configs) are held to the model transformers builds on the
meta device; tensor statistics to transformers' own init of the same small model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from conftest import TRANSFORMERS_ENV, run_client

import weightgen
from weightgen import hf
from weightgen.specfile import parse_spec

HERE = Path(__file__).parent
REAL_CONFIGS = sorted((HERE / "data" / "hf_configs").glob("*.json"))
ROOT = HERE.parent
TRANSFORMERS4 = ROOT / ".venv" / "transformers4"  # make install puts 4.57.6 here

# One tiny config per family (and per head or option worth loading): big enough for
# statistics, small to write. The file's stem is the label.
TINY: dict[str, dict] = {
    p.stem: json.loads(p.read_text()) for p in sorted((HERE / "data" / "hf_tiny").glob("*.json"))
}
# While working on a few families: WEIGHTGEN_TEST_FAMILIES=deepseek_v3,glm4_moe loads only
# those tiny and real configs in the transformers tests (whose setup otherwise builds all).
ONLY = [f for f in os.environ.get("WEIGHTGEN_TEST_FAMILIES", "").split(",") if f]
SELECTED = {k: c for k, c in TINY.items() if not ONLY or c["model_type"] in ONLY}
REAL_SELECTED = [
    p
    for p in REAL_CONFIGS
    if not ONLY or hf.family_of(json.loads(p.read_text())).model_type in ONLY
]
LAYOUTS = ("bfloat16-single", "float32-sharded")


def test_every_family_has_a_tiny_config():
    assert {c["model_type"] for c in TINY.values()} == set(hf.FAMILIES)
    bert_heads = {hf.model_of(c).head.name for c in TINY.values() if c["model_type"] == "bert"}
    assert bert_heads == {"base", "mlm", "pretraining"}


# --- the folders, and what each transformers makes of them ------------------------------


def _write(folder: Path, config: dict, layout: str) -> None:
    dtype, arrangement = layout.split("-")
    spec = weightgen.model_spec(config, dtype=dtype)
    parsed = parse_spec(spec)
    # Sharded: about three shards, so an index and several files are exercised.
    shard = parsed.plan.nbytes // 3 if arrangement == "sharded" else None
    weightgen.write_parsed(parsed, folder, max_shard_size=shard, manifest=True)


def _client(python_path: str | None, jobs: list[dict], tmp: Path) -> dict:
    jobs_file = tmp / f"jobs-{len(jobs)}-{abs(hash(python_path))}.json"
    return run_client(HERE / "hf_client.py", jobs, jobs_file, python_path, **TRANSFORMERS_ENV)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Every tiny folder, and both transformers' reports on them and on the configs."""
    tmp = tmp_path_factory.mktemp("hf")
    folders = {}
    for label, config in SELECTED.items():
        for layout in LAYOUTS:
            folder = tmp / f"{label}-{layout}"
            _write(folder, config, layout)
            folders[(label, layout)] = folder
    for label, recipe in RECIPE_FOLDERS:
        if label in SELECTED:
            folder = tmp / f"{label}-{recipe}"
            weightgen.write_model(SELECTED[label], folder, init=recipe, dtype="bfloat16")
            folders[(label, recipe)] = folder
    # Names, shapes and dtypes in bfloat16, where some families keep tensors in float32.
    specs = {label: weightgen.model_spec(c, dtype="bfloat16") for label, c in SELECTED.items()}
    real = {f"real:{p.stem}": weightgen.model_spec(p) for p in REAL_SELECTED}
    jobs = [{"kind": "load", "folder": str(f)} for f in folders.values()]
    jobs += [{"kind": "names", "config": s["hf_config"]} for s in [*specs.values(), *real.values()]]
    jobs += [
        {"kind": "init", "config": {**s["hf_config"], "dtype": "float32"}} for s in specs.values()
    ]
    if not TRANSFORMERS4.is_dir():
        pytest.fail(f"transformers 4.57.6 is not installed in {TRANSFORMERS4}: run make install")
    reports = {}
    for version, path in (("5", None), ("4", str(TRANSFORMERS4))):
        answer = _client(path, jobs, tmp)
        assert answer["version"].startswith(version), answer["version"]
        found = iter(answer["reports"])
        reports[version] = {
            "load": {key: next(found) for key in folders},
            "names": {label: next(found) for label in [*specs, *real]},
            "init": {label: next(found) for label in specs},
        }
    return {"folders": folders, "specs": specs, "real": real, "reports": reports}


VERSIONS = ("5", "4")
# Folders initialised by a trainer's recipe instead of transformers' rules (test_recipes.py
# checks their values): each loads with every tensor exactly as written.
RECIPE_FOLDERS = [
    ("llama", "torchtitan"),
    ("qwen3_moe", "megatron"),
    ("gpt2", "neox"),
    ("gemma", "olmo2"),
    ("mistral", "nanotron"),
    ("llama", "nanotron-spectral"),
    ("mixtral", "maxtext"),
    ("qwen3_moe", "maxtext"),
    ("llama-tied-bias", "levanter"),
    ("mixtral", "levanter"),
]


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("label", sorted(SELECTED))
def test_transformers_loads_the_folder_cleanly(world, version, layout, label):
    report = _loaded_as_written(world, version, (label, layout))
    assert report["dtype"] == layout.split("-")[0]
    tied = world["specs"][label]["hf_config"]["tie_word_embeddings"]
    if label.startswith("bert-base"):
        assert report["tied_shared"] is None  # BertModel has no output embedding
    else:
        assert report["tied_shared"] is (True if tied else None)


def _loaded_as_written(world, version: str, key: tuple[str, str]) -> dict:
    """The loading report of a folder: clean, finite, and every tensor as loaded is the
    tensor written (nothing re-initialised on load)."""
    report = world["reports"][version]["load"][key]
    assert report["ok"], report.get("error")
    assert report["missing"] == [] and report["unexpected"] == []
    assert report["mismatched"] == [] and report["errors"] == []
    assert report["finite"]
    written = weightgen.load(world["folders"][key])
    for name, dtype in report["dtypes"].items():
        if name in written and str(written[name].dtype) != dtype:
            # transformers 4.x has no _keep_in_fp32_modules_strict: it casts the float32
            # routers 5.x keeps (deepseek_v3, glm4_moe) to the model's dtype on load.
            assert version == "4" and written[name].dtype == np.float32, (name, dtype)
            written[name] = written[name].astype(
                ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype
            )
    ours = {n: hashlib.sha256(a.tobytes()).hexdigest() for n, a in written.items()}
    assert report["digests"] == {n: ours[n] for n in report["digests"]}
    assert set(ours) - set(report["digests"]) <= set(_aliases(version, ours))
    return report


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("label", "recipe"), RECIPE_FOLDERS)
def test_recipe_folders_load_with_every_tensor_as_written(world, version, label, recipe):
    if (label, recipe) not in world["folders"]:
        pytest.skip(f"{label} is not selected (WEIGHTGEN_TEST_FAMILIES)")
    assert _loaded_as_written(world, version, (label, recipe))["dtype"] == "bfloat16"


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("label", sorted(SELECTED))
def test_names_shapes_and_dtypes_equal_the_model_transformers_builds(world, version, label):
    report = world["reports"][version]["names"][label]
    assert report.pop("ok"), report.get("error")
    spec = world["specs"][label]
    ours = _expected(version, spec, report)
    assert ours == {**report, **_aliases(version, ours)}
    for layout in LAYOUTS:  # and what was written is what the spec says
        loaded = weightgen.load(world["folders"][(label, layout)])
        assert {n: list(a.shape) for n, a in loaded.items()} == {n: s for n, (s, _) in ours.items()}


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", [p.stem for p in REAL_SELECTED])
def test_real_published_configs_have_transformers_names_and_shapes(world, version, name):
    report = world["reports"][version]["names"][f"real:{name}"]
    assert report.pop("ok"), report.get("error")
    spec = world["real"][f"real:{name}"]
    ours = _expected(version, spec, report)
    assert ours == {**report, **_aliases(version, ours)}


def _expected(version: str, spec: dict, report: dict) -> dict:
    """{name: [shape, dtype]} as the spec writes them. transformers 4.x has no
    _keep_in_fp32_modules_strict for DeepSeek-V3 and GLM-4.5: it builds their routers in the
    model's dtype and casts the float32 tensors weightgen writes (as 5.x saves them) when it
    loads them (test_transformers_loads_the_folder_cleanly), so there either dtype is theirs."""
    model_dtype = spec["dtype"]
    ours = {n: [t["shape"], t.get("dtype", model_dtype)] for n, t in spec["tensors"].items()}
    if version == "4":
        for name, (shape, dtype) in ours.items():
            if dtype != model_dtype and report.get(name) == [shape, model_dtype]:
                ours[name] = [shape, model_dtype]
    return ours


def _aliases(version: str, ours: dict) -> dict:
    """Tensors that 4.x aliases instead of keeping: an untied BERT decoder's bias is
    cls.predictions.bias there; 5.x keeps (and expects) it apart, so weightgen writes it
    and 4.x loads it cleanly (test_transformers_loads_the_folder_cleanly)."""
    alias = "cls.predictions.decoder.bias"
    return {alias: ours[alias]} if version == "4" and alias in ours else {}


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("label", sorted(SELECTED))
def test_values_follow_transformers_init(world, version, label):
    """Each tensor against the same tensor of transformers' own init: zeros, ones, the same
    std (within a few percent where there are enough values), the same zero rows."""
    theirs = world["reports"][version]["init"][label]
    assert theirs.pop("ok"), theirs.get("error")
    ours = weightgen.load(world["folders"][(label, "float32-sharded")])
    aliases = _aliases(version, ours)
    assert set(ours) == set(theirs) | set(aliases)
    for name, values in ours.items():
        want = theirs.get(name) or {"zeros": True}  # an alias of a zero bias
        if want["zeros"]:
            assert not values.any(), name
            continue
        if want["ones"]:
            assert (values == 1).all(), name
            continue
        if want["constant"] is not None:
            assert (values == want["constant"]).all(), name
            continue
        size = values.size
        # Both stds are draws: their relative difference has a std of about
        # sqrt((kurtosis - 1) / (2 n)), which decides for small or heavy-tailed tensors (A_log,
        # a router bias, attention sinks).
        kurtosis = ((values - values.mean()) ** 4).mean() / values.var() ** 2
        spread = math.sqrt(max(kurtosis - 1, 0) / (2 * size))
        tolerance = max(0.05 if size >= 16384 else 0.15, 5 * spread)
        assert values.std() > 0, name
        assert abs(math.log(values.std() / want["std"])) <= tolerance, (name, values.std())
        # Both means are draws: their difference has std sigma * sqrt(2 / n), sigma estimated
        # by the larger of the two stds (either can be low by chance when n is small).
        sigma = max(want["std"], float(values.std()))
        assert abs(values.mean() - want["mean"]) <= 5 * sigma * math.sqrt(2 / size), name
        if values.ndim == 2:
            zero_rows = np.flatnonzero(~values.any(axis=1)).tolist()
            assert zero_rows == want["zero_rows"], name


# --- folders, specs, configs: no transformers needed ------------------------------------


def test_config_json_is_completed_with_every_field_used(tmp_path):
    config = {
        "model_type": "qwen3",
        "vocab_size": 256,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 1,
        "num_attention_heads": 32,
        "rope_theta": 1000000,
        "custom_field": {"kept": [1, 2]},
    }
    weightgen.write_model(config, tmp_path / "m", dtype="bfloat16")
    written = json.loads((tmp_path / "m" / "config.json").read_text())
    assert written["head_dim"] == 128  # qwen3's class default, not 64 // 4
    assert written["num_key_value_heads"] == 32  # absent: the class default
    null = {**config, "num_attention_heads": 16, "num_key_value_heads": None}
    assert hf.model_of(null).config.num_key_value_heads == 16  # null: the head count
    assert written["tie_word_embeddings"] is False and written["pad_token_id"] is None
    assert written["dtype"] == written["torch_dtype"] == "bfloat16"
    assert written["architectures"] == ["Qwen3ForCausalLM"]
    assert written["rope_theta"] == 1000000 and written["custom_field"] == {"kept": [1, 2]}
    assert written["initializer_range"] == 0.02


def test_spec_then_run_gives_the_same_folder(tmp_path, run_cli):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY["llama"]))
    direct = run_cli("hf", str(config), "-o", str(tmp_path / "direct"), "-q", "--seed", "4")
    assert direct.code == 0, direct.stderr
    spec = run_cli("hf", str(config), "--spec", "--seed", "4")
    assert spec.code == 0 and json.loads(spec.stdout)["hf_config"]["model_type"] == "llama"
    piped = run_cli("run", "-", "-o", str(tmp_path / "piped"), "-q", input=spec.stdout_bytes)
    assert piped.code == 0, piped.stderr
    for name in ("config.json", "model.safetensors", "weightgen.manifest.json"):
        assert (tmp_path / "direct" / name).read_bytes() == (tmp_path / "piped" / name).read_bytes()


def test_pad_row_is_zero_and_everything_else_is_jax(tmp_path):
    """zero_rows is init(key, shape, dtype).at[rows].set(0): every other byte unchanged."""
    import jax

    from weightgen.plan import name_fold_in

    weightgen.write_model(TINY["llama"], tmp_path / "m", seed=11)
    embed = weightgen.load(tmp_path / "m")["model.embed_tokens.weight"]
    key = jax.random.fold_in(jax.random.key(11), name_fold_in("model.embed_tokens.weight"))
    expected = jax.nn.initializers.normal(0.02)(key, (512, 128)).at[3].set(0)
    assert embed.tobytes() == np.asarray(expected).tobytes()


def test_verify_and_inspect_take_the_folder(tmp_path, run_cli):
    folder = tmp_path / "m"
    weightgen.write_model(TINY["gemma"], folder, max_shard_size=50_000)
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    assert run_cli("verify", str(folder)).code == 0
    report = json.loads(run_cli("inspect", str(folder), "--json").stdout)
    assert {t["name"] for t in report["tensors"]} == set(weightgen.load(folder))
    norm = next(t for t in report["tensors"] if t["name"] == "model.norm.weight")
    assert norm["min"] == norm["max"] == 0.0  # gemma's norms: x * (1 + w)
    config = folder / "config.json"
    config.write_text(config.read_text().replace('"hidden_size": 128', '"hidden_size": 129'))
    changed = run_cli("verify", str(folder))
    assert changed.code == 1 and "config.json" in changed.stderr


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"model_type": "llama4"}, "'llama4' is not supported; weightgen knows bert, "),
        ({"model_type": None}, "config.json has no model_type; add one"),
        ({"hidden_size": 0}, "hidden_size must be an integer from 1"),
        ({"hidden_size": 64.0}, "hidden_size must be an integer"),
        ({"hidden_size": 2**40}, "hidden_size must be an integer from 1 to 16777216"),
        ({"num_attention_heads": 3}, "128 is not a multiple of num_attention_heads 3"),
        ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads 3"),
        ({"tie_word_embeddings": 1}, "tie_word_embeddings must be true or false"),
        ({"pad_token_id": 512}, "pad_token_id 512 is not below vocab_size 512"),
        ({"pad_token_id": -1}, "pad_token_id must be a token id"),
        ({"initializer_range": "0.02"}, "initializer_range must be a number"),
        ({"num_hidden_layers": 100_000}, "num_hidden_layers must be an integer from 1 to 10000"),
    ],
)
def test_bad_configs_are_refused_by_name(tmp_path, run_cli, change, fragment):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**TINY["llama"], **change}))
    result = run_cli("hf", str(config), "-o", str(tmp_path / "out"))
    assert result.code == 2, result.stderr
    assert fragment in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("label", "change", "fragment"),
    [
        (
            "gpt_oss",
            {"layer_types": ["sliding_attention"]},
            "layer_types has 1 entries; num_hidden_layers is 2",
        ),
        (
            "gpt_oss",
            {"layer_types": ["sliding_attention", "chunked_attention"]},
            "layer_types: 'chunked_attention' is not one of full_attention, sliding_attention",
        ),
        ("gpt_oss", {"layer_types": "full_attention"}, "layer_types must be a list of at most"),
        (
            "gpt_oss",
            {"num_experts_per_tok": 17},
            "num_experts_per_tok 17 exceeds num_local_experts 16",
        ),
        ("gpt_oss", {"num_experts": 8}, "num_experts and num_local_experts name the same field"),
        ("gpt_oss", {"attention_bias": "yes"}, "attention_bias must be true or false"),
        ("gpt_oss", {"num_local_experts": 0}, "num_local_experts must be an integer from 1"),
        ("qwen2_moe", {"qkv_bias": 1}, "qkv_bias must be true or false"),
        (
            "qwen2_moe",
            {"head_dim": 16},
            "num_attention_heads 4 times head_dim 16 is not hidden_size",
        ),
        ("qwen2_moe", {"num_experts_per_tok": 5}, "num_experts_per_tok 5 exceeds num_experts 4"),
        (
            "qwen2_moe",
            {"shared_expert_intermediate_size": 0},
            "shared_expert_intermediate_size must",
        ),
        ("qwen2_moe", {"decoder_sparse_step": 0}, "decoder_sparse_step must be an integer from 1"),
        ("qwen2_moe", {"layer_types": ["full_attention"] * 4}, "layer_types has 4 entries"),
        (
            "olmo3",
            {"layer_types": ["full_attention"] * 3},
            "layer_types has 3 entries; num_hidden_layers is 4",
        ),
        (
            "olmo3",
            {"layer_types": ["full_attention"] * 3 + ["chunked_attention"]},
            "layer_types: 'chunked_attention' is not one of full_attention, sliding_attention",
        ),
        ("olmo3", {"layer_types": "sliding_attention"}, "layer_types must be a list"),
        (
            "smollm3",
            {"no_rope_layers": [1, 1, 0]},
            "no_rope_layers has 3 entries; num_hidden_layers is 4",
        ),
        (
            "smollm3",
            {"no_rope_layers": [1, 1, 2, 0]},
            "no_rope_layers must hold only 1 (rotary) and 0",
        ),
        (
            "smollm3",
            {"no_rope_layer_interval": 0},
            "no_rope_layer_interval must be an integer from 1",
        ),
        ("granite", {"mlp_bias": "false"}, "mlp_bias must be true or false"),
        ("starcoder2", {"use_bias": 1}, "use_bias must be true or false"),
        (
            "qwen3_next",
            {"layer_types": ["linear_attention"] * 3},
            "layer_types must name one type per layer",
        ),
        (
            "qwen3_next",
            {"layer_types": ["linear_attention", "attention", "full_attention", "full_attention"]},
            "layer_types: 'attention' is not one of linear_attention, full_attention",
        ),
        (
            "qwen3_next",
            {"layer_types": "full_attention"},
            "layer_types must be a list of at most 10000 names",
        ),
        (
            "qwen3_next",
            {"full_attention_interval": 0},
            "full_attention_interval must be an integer from 1",
        ),
        (
            "qwen3_next",
            {"linear_num_value_heads": 6},
            "6 is not a multiple of linear_num_key_heads 4",
        ),
        (
            "qwen3_next",
            {"linear_conv_kernel_dim": 0},
            "linear_conv_kernel_dim must be an integer from 1 to",
        ),
        ("qwen3_next", {"num_experts_per_tok": 5}, "num_experts_per_tok 5 exceeds num_experts 4"),
        (
            "deepseek_v3",
            {"q_lora_rank": 0},
            "q_lora_rank must be an integer from 1 to 16777216 or null",
        ),
        ("deepseek_v3", {"kv_lora_rank": 1.5}, "kv_lora_rank must be an integer from 1"),
        (
            "deepseek_v3",
            {"first_k_dense_replace": -1},
            "first_k_dense_replace must be an integer from 0",
        ),
        (
            "deepseek_v3",
            {"n_routed_experts": 3},
            "n_routed_experts 3 is not a multiple of n_group 2",
        ),
        (
            "deepseek_v3",
            {"num_experts_per_tok": 5},
            "num_experts_per_tok 5 exceeds n_routed_experts 4",
        ),
        ("deepseek_v3", {"topk_group": 3}, "topk_group 3 exceeds n_group 2"),
        ("glm4_moe", {"n_shared_experts": 0}, "n_shared_experts must be an integer from 1"),
        ("glm4_moe", {"use_qk_norm": "yes"}, "use_qk_norm must be true or false"),
    ],
)
def test_bad_family_fields_are_refused_by_name(tmp_path, run_cli, label, change, fragment):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**TINY[label], **change}))
    result = run_cli("hf", str(config), "-o", str(tmp_path / "out"))
    assert result.code == 2, result.stderr
    assert fragment in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "out").exists()


def test_a_quantization_config_is_left_out_and_said(tmp_path, run_cli):
    """The weights are not quantized: a quantization_config kept in config.json would make
    transformers look for mxfp4 blocks (the world fixture loads such a folder)."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY["gpt_oss-tied-mxfp4"]))
    result = run_cli("hf", str(config), "-o", str(tmp_path / "out"))
    assert result.code == 0, result.stderr
    assert "quantization_config is left out" in result.stderr
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "quantization_config" not in written
    assert written["num_local_experts"] == written["num_experts"] == 8  # 4.x reads the first
    quiet = run_cli("hf", str(config), "--spec", "-q")
    assert quiet.code == 0 and quiet.stderr == ""


def test_layer_types_follow_full_attention_interval_and_are_written():
    spec = weightgen.model_spec(TINY["qwen3_next"])
    written = spec["hf_config"]["layer_types"]
    assert written == ["linear_attention", "full_attention"] * 2
    assert "model.layers.1.self_attn.q_proj.weight" in spec["tensors"]
    assert "model.layers.0.linear_attn.A_log" in spec["tensors"]
    assert not any(n.startswith("model.layers.1.linear_attn") for n in spec["tensors"])


def test_a_rule_may_set_a_transform_and_is_checked():
    rule = '*.A_log=uniform,scale=16,transform={"name":"log","offset":0.5}'
    spec = weightgen.model_spec(TINY["qwen3_next"], rules=[rule, "*.dt_bias=uniform,transform=log"])
    a_log = spec["tensors"]["model.layers.0.linear_attn.A_log"]
    assert a_log["transform"] == {"name": "log", "offset": 0.5} and a_log["scale"] == 16
    assert spec["tensors"]["model.layers.2.linear_attn.dt_bias"]["transform"]["name"] == "log"
    parse_spec(spec)  # a valid spec
    for bad, fragment in (
        ("*.A_log=normal,transform=log", "normal draws values of either sign"),
        ("*.A_log=uniform,transform=exp", "transform 'exp' is unknown"),
    ):
        with pytest.raises(weightgen.UsageError, match=re.escape(fragment)) as info:
            weightgen.model_spec(TINY["qwen3_next"], rules=[bad])
        assert str(info.value).startswith(f"--rule {bad!r}: "), str(info.value)


def test_deepseek_configs_are_written_as_the_model_transformers_builds():
    """Kimi-K2's model_type kimi_k2 is written as deepseek_v3 (transformers knows no other);
    the fp8 quantization_config is dropped (the weights are not fp8); no MTP layers are
    written, and num_nextn_predict_layers says so; the router stays float32 in every model
    dtype but float32 itself, as transformers 5.x saves it."""
    kimi = json.loads((HERE / "data" / "hf_configs" / "kimi-k2-instruct.json").read_text())
    small = {**kimi, "num_hidden_layers": 2, "n_routed_experts": 8, "num_nextn_predict_layers": 1}
    for dtype in ("bfloat16", "float16", "float32", "float64"):
        spec = weightgen.model_spec(small, dtype=dtype)
        config = spec["hf_config"]
        assert config["model_type"] == "deepseek_v3" and "quantization_config" not in config
        assert config["num_nextn_predict_layers"] == 0 and "model.layers.2" not in str(spec)
        router = spec["tensors"]["model.layers.1.mlp.gate.weight"]
        bias = spec["tensors"]["model.layers.1.mlp.gate.e_score_correction_bias"]
        assert router.get("dtype", dtype) == bias.get("dtype", dtype) == "float32"
        assert spec["tensors"]["model.layers.1.mlp.shared_experts.up_proj.weight"]["shape"] == [
            2048,
            7168,
        ]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{", "not valid JSON"),
        ('{"model_type": "llama", "model_type": "gpt2"}', "duplicate key 'model_type'"),
        ('{"model_type": "llama", "initializer_range": NaN}', "NaN is not allowed"),
        ("[1, 2]", "holds a JSON object"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_config_is_parsed_strictly(tmp_path, run_cli, text, fragment):
    config = tmp_path / "config.json"
    config.write_text(text)
    result = run_cli("hf", str(config), "-o", str(tmp_path / "out"))
    assert result.code == 2 and fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_model_larger_than_the_disk_is_refused_before_any_work(tmp_path, run_cli):
    config = tmp_path / "config.json"
    config.write_text((HERE / "data" / "hf_configs" / "llama-3-70b.json").read_text())
    result = run_cli("hf", str(config), "-o", str(tmp_path / "big"), "--dtype", "float64")
    assert result.code == 1 and "free" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == [config]


def test_folder_options_are_checked(tmp_path, run_cli):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY["bert-base"]))
    wrong_head = run_cli("hf", str(config), "-o", str(tmp_path / "o"), "--head", "causal-lm")
    assert wrong_head.code == 2 and "base, mlm, pretraining" in wrong_head.stderr
    as_file = run_cli("hf", str(config), "-o", str(tmp_path / "o.safetensors"))
    assert as_file.code == 2 and "give a folder name" in as_file.stderr
    no_output = run_cli("hf", str(config))
    assert no_output.code == 2 and "-o DIR is required" in no_output.stderr
    int_dtype = run_cli("hf", str(config), "-o", str(tmp_path / "o"), "--dtype", "complex64")
    assert int_dtype.code == 2 and "transformers builds models in" in int_dtype.stderr
    assert not any(tmp_path.glob("o*"))


def test_heads_follow_architectures_and_default_to_the_first():
    base = {k: v for k, v in TINY["bert-mlm"].items() if k != "architectures"}
    assert hf.model_of(base).head.name == "base"
    assert hf.model_of(TINY["bert-mlm"]).head.name == "mlm"
    assert hf.model_of(TINY["bert-mlm"], "pretraining").head.name == "pretraining"


def test_real_configs_keep_their_dtype_and_count_their_parameters():
    llama8b = weightgen.model_spec(HERE / "data" / "hf_configs" / "llama-3-8b.json")
    assert llama8b["dtype"] == "bfloat16" and llama8b["sample_dtype"] == "float32"
    params = sum(math.prod(t["shape"]) for t in llama8b["tensors"].values())
    assert params == 8_030_261_248  # Meta-Llama-3-8B's published parameter count


def test_readme_table_of_families_is_the_declarations():
    readme = (ROOT / "README.md").read_text()
    assert hf.families_table() in readme


def test_a_failed_write_leaves_no_partial_folder(tmp_path, run_cli, monkeypatch):
    import errno

    from weightgen import atomic

    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY["llama"]))
    old = tmp_path / "old"
    assert run_cli("hf", str(config), "-o", str(old), "-q", "--seed", "1").code == 0
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    original = atomic.os.pwrite

    def pwrite(fd, data, offset):
        if offset > 100_000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(fd, data, offset)

    monkeypatch.setattr(atomic.os, "pwrite", pwrite)
    for target in (tmp_path / "new", old):
        result = run_cli("hf", str(config), "-o", str(target), "--force", "--seed", "2")
        assert result.code == 1 and "No space left" in result.stderr
    assert not (tmp_path / "new").exists()
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "old"]


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({**TINY["llama"], "initializer_range": 10**400}, "initializer_range must be a number"),
        (
            {**TINY["qwen3_moe"], "num_hidden_layers": 2000, "num_experts": 10_000},
            "tensors; a model may have at most 100,000",
        ),
        ({**TINY["qwen3_moe"], "mlp_only_layers": list(range(20_000))}, "at most 10000"),
    ],
)
def test_configs_that_would_take_forever_are_refused_at_once(config, fragment):
    with pytest.raises(weightgen.UsageError, match=re.escape(fragment)):
        weightgen.model_spec(config)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc, where nothing is written")
def test_a_manifest_that_cannot_be_written_stops_the_run_before_the_commit(tmp_path):
    """The manifest beside the output is made before the output is committed, so the run
    never ends with an output and no manifest."""
    out = tmp_path / "w.safetensors"
    with pytest.raises(weightgen.WeightgenError, match="cannot create a file in /proc"):
        weightgen.generate("normal", (8, 8), out, manifest="/proc/weightgen-test.manifest.json")
    assert list(tmp_path.iterdir()) == []
