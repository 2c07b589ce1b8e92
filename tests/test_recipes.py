"""Init recipes (weightgen hf --init, --init-std, --rule), held to the trainers' own formulas.

The formulas are restated here from each trainer's source, not taken from weightgen's recipe
pages, and compared with what weightgen writes: per tensor, from the role its family declares,
the std within sampling error, the mean near 0, exact zeros and ones, the truncation bound,
per-layer depth scaling. Byte-level parity with jax.nn.initializers is checked for one tensor
per kind of rule. The trainers' own initialised models are compared in test_trainers.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import weightgen
from weightgen import hf
from weightgen.initializers import compute_fans
from weightgen.specfile import parse_spec

HERE = Path(__file__).parent
TINY = {
    p.stem: json.loads(p.read_text()) for p in sorted((HERE / "data" / "hf_tiny").glob("*.json"))
}
BEFORE = HERE / "fixtures" / "hf_before_recipes"


# --- The formulas, from the trainers' sources ----------------------------------------------
# Each returns ("normal", std) | ("truncated", std, cut in stds) | ("zeros",) | ("family",)
# (the family's own rule: norms at the identity, and the tensors only one family has).


def megatron(role: str, sigma: float, d: int, layers: int, layer: int | None, model: str, **_):
    """Megatron-LM megatron/core/utils.py: init_method_normal(σ) = normal_(0, σ);
    scaled_init_method_normal(σ, L) = normal_(0, σ / sqrt(2 L)) for linear_proj and
    linear_fc2 (experts' too); biases zero; norms one."""
    base = role.split(".")[0]
    if role == "bias.router":  # TopKRouter's bias takes init_method, as its weight
        return ("normal", sigma)
    if base in ("norm", "special"):
        return ("family",)
    if base == "bias":
        return ("zeros",)
    if base in ("attn_out", "mlp_out", "expert_out"):
        return ("normal", sigma / math.sqrt(2 * layers))
    return ("normal", sigma)


def neox(role: str, sigma: float, d: int, layers: int, layer: int | None, model: str, **_):
    """GPT-NeoX megatron/model/init_functions.py, as configs/pythia/*.yml use them:
    small_init_init_method(d) = normal_(0, sqrt(2 / (5 d))) for init_method (embedding,
    query_key_value, dense_h_to_4h, the final linear); wang_init_method(L, d) =
    normal_(0, 2 / L / sqrt(d)) for output_layer_init_method (dense, dense_4h_to_h)."""
    base = role.split(".")[0]
    if base in ("norm", "special"):
        return ("family",)
    if base == "bias":
        return ("zeros",)
    if base in ("attn_out", "mlp_out", "expert_out"):
        return ("normal", 2 / layers / math.sqrt(d))
    return ("normal", math.sqrt(2 / (5 * d)))


def olmo2(role: str, sigma: float, d: int, layers: int, layer: int | None, model: str, **_):
    """OLMo-core src/olmo_core/nn/transformer/init.py, InitMethod.normal: every Linear,
    the embedding and the head trunc_normal_(std=σ, a=-3σ, b=3σ); biases zero."""
    base = role.split(".")[0]
    if base in ("norm", "special"):
        return ("family",)
    if base == "bias":
        return ("zeros",)
    return ("truncated", sigma, 3.0)


TITAN_MODELS = {
    "llama": "llama3",
    "mistral": "llama3",
    "qwen3": "qwen3",
    "qwen3_moe": "qwen3_moe",
    "deepseek_v3": "deepseek_v3",
    "gpt_oss": "gpt_oss",
}


def torchtitan(role: str, sigma: float, d: int, layers: int, layer: int | None, model: str, **_):
    """torchtitan 0.3.0, torchtitan/models/<model>/__init__.py. trunc_normal_(std=s) with its
    absolute default bounds (±2, i.e. ±100 s) is no cut: a normal of std s.
    llama3: _LINEAR_INIT 0.02 (q/k/v, w1), _depth_init(l) 0.02/sqrt(2(l+1)) (wo, w2, w3),
    _EMBEDDING_INIT normal_(1.0), _output_linear_init(dim) trunc_normal_(dim**-0.5, ±3 std).
    qwen3: normal_(0.02) everywhere; MoE: wo and the experts' w2 at 0.02/sqrt(2L).
    deepseek_v3: llama3's, plus router and experts' (routed and shared) w2, w3 at depth.
    gpt_oss: every matrix, sinks and expert biases at depth; embedding 0.02; head as llama3."""
    kind = TITAN_MODELS[model]
    base = role.split(".")[0]
    depth = sigma / math.sqrt(2 * (layer + 1)) if layer is not None else None
    head = ("truncated", d**-0.5, 3.0)
    if base == "norm":
        return ("family",)
    if kind in ("qwen3", "qwen3_moe"):
        if base == "bias" or base == "special":
            return ("zeros",) if base == "bias" else ("family",)
        if kind == "qwen3_moe" and base in ("attn_out", "expert_out"):
            return ("normal", sigma / math.sqrt(2 * layers))
        return ("normal", sigma)
    if kind == "gpt_oss":
        if role in ("bias.expert", "special.sinks"):
            return ("normal", depth)
        if base == "bias":
            return ("zeros",)
        if base == "embedding":
            return ("normal", sigma)
        if base == "head":
            return head
        return ("normal", depth)
    # llama3 and deepseek_v3
    if base == "bias":
        return ("zeros",)
    if base == "special":
        return ("family",)
    if base == "embedding":
        return ("normal", 1.0)
    if base == "head":
        return head
    if base == "attn_in" or role.startswith(("mlp_in.gate", "expert_in.gate")):
        return ("normal", sigma)
    return ("normal", depth)  # attn_out, up, down; deepseek_v3's router


MUP_BASE = 32  # the tiny configs' hidden size is 128: m = 4


def megatron_mup(role: str, sigma: float, d: int, layers: int, layer: int | None, model: str, **_):
    """megatron-core 0.19.2 with use_mup=True, mup_base_hidden_size=W:
    transformer_config.py TransformerConfig.__post_init__ sets m = hidden_size / W,
    init_method = init_method_normal(σ / sqrt(m)), output_layer_init_method =
    utils.py mup_scaled_init_method_normal(σ, L, m) = normal_(0, σ / (sqrt(2 L) sqrt(m)));
    embedding_init_method stays normal_(0, σ) (embedding_init_method_std defaults to σ,
    set before the μP scaling); gpt_model.py gives an untied output_layer
    embedding_init_method under μP."""
    m = d / MUP_BASE
    base = role.split(".")[0]
    if base in ("norm", "special"):
        return ("family",)
    if base == "bias" and role != "bias.router":
        return ("zeros",)
    if base in ("embedding", "head"):
        return ("normal", sigma)
    if base in ("attn_out", "mlp_out", "expert_out"):
        return ("normal", sigma / (math.sqrt(2 * layers) * math.sqrt(m)))
    return ("normal", sigma / math.sqrt(m))  # q/k/v, fc1, router (and its bias), experts' fc1


NANOTRON_MODELS = ("llama", "mistral")  # nanotron v0.5's LlamaForTraining


def nanotron(role: str, sigma: float, d: int, layers: int, layer: int | None, model: str, **_):
    """huggingface/nanotron v0.5 src/nanotron/scaling/parametrization.py
    StandardParametrizator: TensorParallelColumnLinear (qkv_proj, gate_up_proj, lm_head) and
    TensorParallelEmbedding normal_(0, std); TensorParallelRowLinear (o_proj, down_proj)
    normal_(0, std / sqrt(2 L)); TritonRMSNorm ones."""
    base = role.split(".")[0]
    if base == "norm":
        return ("family",)
    if base in ("attn_out", "mlp_out"):
        return ("normal", sigma / math.sqrt(2 * layers))
    return ("normal", sigma)


def nanotron_spectral(
    role: str, sigma: float, d: int, layers: int, layer: int | None, model: str, **where
):
    """nanotron v0.5 SpectralMupParametrizator._compute_spectral_std with std 1.0:
    (1 / sqrt(fan_in)) min(1, sqrt(fan_out / fan_in)), torch's fans of nanotron's own
    matrices: models/llama.py CausalSelfAttention.qkv_proj [(heads + 2 kv_heads) d_qk, d]
    (d_qk = d / heads), MLP.gate_up_proj [2 I, d], o_proj, down_proj, lm_head as they are.
    TensorParallelEmbedding normal_(0, 1.0); TritonRMSNorm ones."""
    base, c, name = role.split(".")[0], where["config"], where["name"]
    if base == "norm":
        return ("family",)
    if base == "embedding":
        return ("normal", 1.0)
    fan_out, fan_in = where["shape"]  # torch's [out, in]
    if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
        d_qk = c.hidden_size // c.num_attention_heads
        fan_out = (c.num_attention_heads + 2 * c.num_key_value_heads) * d_qk
    elif name.endswith(("gate_proj.weight", "up_proj.weight")):
        fan_out = 2 * c.intermediate_size
    return ("normal", (1 / math.sqrt(fan_in)) * min(1, math.sqrt(fan_out / fan_in)))


FORMULAS = {
    "megatron": megatron,
    "megatron-mup": megatron_mup,
    "nanotron": nanotron,
    "nanotron-spectral": nanotron_spectral,
    "neox": neox,
    "olmo2": olmo2,
    "torchtitan": torchtitan,
}
# A formula's key -> (weightgen's recipe, its options), where they differ.
OPTIONS = {"megatron-mup": ("megatron", {"mup_base_width": MUP_BASE})}
DEFAULT_STD = {
    "megatron": "config",
    "megatron-mup": "config",
    "nanotron": "config",
    "nanotron-spectral": None,
    "neox": None,
    "olmo2": "config",
    "torchtitan": 0.02,
}
TIED_ROLE = {"torchtitan": "head"}  # the others init a tied embedding as an embedding


def recipe_options(key: str) -> dict:
    recipe, options = OPTIONS.get(key, (key, {}))
    return {"init": recipe, **options}


def takes(recipe: str, label: str) -> bool:
    config = TINY[label]
    if recipe.startswith("nanotron"):  # no biases, head_dim = hidden / heads
        plain = not config.get("attention_bias") and not config.get("mlp_bias")
        return config["model_type"] in NANOTRON_MODELS and plain
    return recipe != "torchtitan" or config["model_type"] in TITAN_MODELS


def _truncated_std(cut: float) -> float:
    """std of a standard normal truncated to (-cut, cut)."""
    from scipy.stats import truncnorm

    return float(truncnorm.std(-cut, cut))


def _close(measured: float, want: float, count: int, kurtosis: float = 3.0) -> bool:
    """Within five standard errors of the std estimate, plus bfloat16-sized rounding."""
    error = want * math.sqrt((kurtosis - 1) / (4 * count))
    return abs(measured - want) <= 5 * error + 4e-3 * want


def _check_tensor(name, values, formula, family_entry, entry):
    values = values.astype(np.float64)
    kind = formula[0]
    if kind == "family":  # the family's own rule, exactly (A_log's transform included)
        assert entry == family_entry, name
        if family_entry["init"] == "zeros":
            assert not values.any(), name
        elif family_entry["init"] == "ones":
            assert (values == 1).all(), name
        elif family_entry["init"] == "normal":
            assert _close(values.std(), family_entry["stddev"], values.size), name
        return
    if kind == "zeros":
        assert not values.any(), name
        return
    std = formula[1]
    if kind == "truncated":
        cut = formula[2]
        assert np.abs(values).max() <= cut * std * (1 + 1e-6), name
        want = std * _truncated_std(cut)
    else:
        want = std
    assert _close(values.std(), want, values.size), (name, values.std(), want)
    assert abs(values.mean()) <= 5 * want / math.sqrt(values.size), name
    if values.ndim == 2 and values.shape[0] > 1:  # no padding row zeroed by the trainers
        assert values.any(axis=1).all(), name


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Every tiny model under every role-based recipe, in float32."""
    root = tmp_path_factory.mktemp("recipes")
    folders = {}
    for recipe in FORMULAS:
        for label, config in TINY.items():
            if not takes(recipe, label):
                continue
            folder = root / f"{recipe}-{label}"
            options = recipe_options(recipe)
            weightgen.write_model(config, folder, **options, seed=3, manifest=True)
            folders[(recipe, label)] = folder
    return folders


@pytest.mark.slow
@pytest.mark.parametrize(
    ("recipe", "label"),
    [(r, label) for r in sorted(FORMULAS) for label in sorted(TINY) if takes(r, label)],
)
def test_every_tensor_follows_the_trainers_formula(written, recipe, label):
    config = TINY[label]
    model = hf.model_of(config)
    c, family = model.config, model.family
    default = DEFAULT_STD[recipe]
    sigma = hf.family.init_std(c) if default == "config" else default
    d, layers = getattr(c, family.hidden), getattr(c, family.layers)
    tied = getattr(c, "tie_word_embeddings", False)
    family_spec = weightgen.model_spec(config)["tensors"]
    spec = weightgen.model_spec(config, **recipe_options(recipe))["tensors"]
    values = weightgen.load(written[(recipe, label)])
    assert set(values) == {t.name for t in model.tensors}
    for t in model.tensors:
        role = t.decl.role
        if t.decl.tied and tied:  # the shared tensor: torchtitan inits it last, as the head
            role = TIED_ROLE.get(recipe, "embedding")
        formula = FORMULAS[recipe](
            role, sigma, d, layers, t.layer, family.model_type, shape=t.shape, config=c, name=t.name
        )
        _check_tensor(t.name, values[t.name], formula, family_spec[t.name], spec[t.name])


@pytest.mark.slow
def test_inspect_finds_every_recipe_tensor_within_sampling_error(written, run_cli):
    cases = [
        ("megatron", "qwen3_moe"),
        ("olmo2", "gpt2"),
        ("neox", "bert-pretraining-untied"),
        ("megatron", "qwen3_next"),  # A_log: the log of a uniform, in closed form
        ("torchtitan", "llama-tied-bias"),
        ("megatron-mup", "qwen3_moe"),
        ("nanotron-spectral", "llama"),
    ]
    for key in cases:
        report = json.loads(run_cli("inspect", str(written[key]), "--json").stdout)
        assert all(t["expected"] is not None for t in report["tensors"]), key
        assert [t["name"] for t in report["tensors"] if t["off"]] == [], key


def test_inspect_allows_a_cut_rounded_to_the_stored_dtype(tmp_path, run_cli):
    """A bfloat16 tensor cut at ±3σ = ±0.06 holds ±0.0600586, the nearest bfloat16: within
    its rule; a value past that is not."""
    import ml_dtypes

    from weightgen import expect

    weightgen.write_model(TINY["llama"], tmp_path / "m", init="olmo2", dtype="bfloat16")
    report = json.loads(run_cli("inspect", str(tmp_path / "m"), "--json").stdout)
    assert [t["name"] for t in report["tensors"] if t["off"]] == []
    assert max(t["max"] for t in report["tensors"] if t["name"].endswith("proj.weight")) > 0.06
    want = expect.Expected(0.0, 0.02 * 0.98658, 2.8, -0.06, 0.06)
    bf16 = np.dtype(ml_dtypes.bfloat16)
    assert expect.check(want, 10**6, 0.0, 0.0197, -0.0600586, 0.0600586, bf16) == ""
    assert "above the rule's bound" in expect.check(want, 10**6, 0.0, 0.0197, -0.06, 0.0605, bf16)
    assert "above the rule's bound" in expect.check(want, 10**6, 0.0, 0.0197, -0.06, 0.0600586)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_inspect_accepts_a_constant_rule_as_stored(tmp_path, run_cli, dtype):
    """A constant 0.1 is stored as the nearest value of the dtype (0.100000001 in float32):
    that is the rule's value; a constant 0.2 where the rule says 0.1 is not."""
    from weightgen import expect

    weightgen.write_model(
        TINY["llama"], tmp_path / "m", dtype=dtype, rules=["*.o_proj.weight=constant,value=0.1"]
    )
    report = json.loads(run_cli("inspect", str(tmp_path / "m"), "--json").stdout)
    assert [t["name"] for t in report["tensors"] if t["off"]] == []
    assert {t["min"] for t in report["tensors"] if t["name"].endswith("o_proj.weight")} != {0.1}
    want = expect.Expected(0.1, 0.0, 0.0, 0.1, 0.1, value=0.1)
    found = float(np.float32(0.2))
    assert "expected every value 0.1," in expect.check(want, 8, found, 0, found, found, None)


@pytest.mark.parametrize(
    ("recipe", "name", "jax_init"),
    [
        ("megatron", "model.layers.1.self_attn.o_proj.weight", ("normal", {"stddev": 0.01})),
        ("neox", "model.layers.0.mlp.up_proj.weight", ("normal", {"stddev": (2 / 640) ** 0.5})),
        (
            "olmo2",
            "model.embed_tokens.weight",
            ("truncated_normal", {"stddev": 0.02, "lower": -3.0, "upper": 3.0}),
        ),
        # k_proj [64, 128] takes the fans of nanotron's fused qkv_proj [256, 128]: 1/sqrt(128)
        # (its own fans would give sqrt(1/2) of that).
        (
            "nanotron-spectral",
            "model.layers.0.self_attn.k_proj.weight",
            ("normal", {"stddev": 1 / math.sqrt(128)}),
        ),
    ],
)
def test_recipe_tensors_are_jax_calls_byte_for_byte(tmp_path, recipe, name, jax_init):
    """The rule written is exactly one jax.nn.initializers call with the key rule's key."""
    import jax

    from weightgen.plan import name_fold_in

    weightgen.write_model(TINY["llama"], tmp_path / "m", init=recipe, seed=9)
    got = weightgen.load(tmp_path / "m")[name]
    key = jax.random.fold_in(jax.random.key(9), name_fold_in(name))
    kind, params = jax_init
    init = getattr(jax.nn.initializers, kind)(**params)
    assert got.tobytes() == np.asarray(init(key, got.shape)).tobytes()


def test_init_hf_is_todays_output_byte_for_byte(tmp_path):
    """Folders written before recipes existed (weightgen 0.2.0, manifests kept as fixtures)
    verify against folders written now with --init hf: weights, config.json, every file."""
    fixtures = sorted(BEFORE.glob("*.manifest.json"))
    assert {p.name.removesuffix(".manifest.json") for p in fixtures} <= set(TINY)
    for fixture in fixtures:
        label = fixture.name.removesuffix(".manifest.json")
        folder = tmp_path / label
        weightgen.write_model(TINY[label], folder, init="hf", seed=5, dtype="bfloat16")
        assert weightgen.verify(fixture, folder) == [], label
        document = json.loads((folder / "weightgen.manifest.json").read_text())
        assert "recipe" not in document  # nothing new in the default's manifest either


# --- --init-std, --rule, and what is recorded --------------------------------------------


def _spec(**options):
    return weightgen.model_spec(TINY["llama"], **options)


def test_init_std_sets_the_base_std_and_the_scaled_ones_follow():
    spec = _spec(init="megatron", init_std=0.006)
    tensors = spec["tensors"]
    assert tensors["model.layers.0.self_attn.q_proj.weight"]["stddev"] == 0.006
    assert tensors["model.layers.0.mlp.down_proj.weight"]["stddev"] == 0.006 / math.sqrt(2 * 2)
    assert spec["recipe"] == {"name": "megatron", "init_std": 0.006, "rules": []}
    default = _spec(init="megatron")
    assert default["recipe"]["init_std"] == 0.02  # the config's initializer_range
    assert default["hf_config"] == spec["hf_config"] == _spec()["hf_config"]  # config unchanged


def test_torchtitan_absolute_cuts_become_real_at_a_large_base_std():
    """torch's trunc_normal_ bounds are absolute (±2): invisible at σ 0.02 (written as a
    normal), a ±2σ cut at σ 1.0 and ±4σ at the depth std σ/sqrt(2·2). gpt_oss's embedding is
    normal_(std=σ) in torchtitan 0.3.0 (_EMBEDDING_INIT), never cut."""
    llama = _spec(init="torchtitan", init_std=1.0)["tensors"]
    assert _spec(init="torchtitan")["tensors"]["model.layers.0.self_attn.q_proj.weight"] == {
        "shape": [128, 128],
        "init": "normal",
        "stddev": 0.02,
    }
    cut = {k: llama["model.layers.0.self_attn.q_proj.weight"][k] for k in ("init", "lower")}
    assert cut == {"init": "truncated-normal", "lower": -2.0}
    assert llama["model.layers.1.mlp.down_proj.weight"]["upper"] == 4.0
    gpt_oss = weightgen.model_spec(TINY["gpt_oss"], init="torchtitan", init_std=1.0)["tensors"]
    assert gpt_oss["model.embed_tokens.weight"] == {
        "shape": gpt_oss["model.embed_tokens.weight"]["shape"],
        "init": "normal",
        "stddev": 1.0,
    }


def test_rules_apply_after_the_recipe_and_the_later_rule_wins():
    spec = _spec(
        init="olmo2",
        rules=[
            "*.o_proj.weight=zeros",
            "model.layers.1.*.o_proj.weight=normal,stddev=0.5",
            "model.embed_tokens.weight=normal,stddev=1.0,zero_rows=[3]",
            "*.mlp.down_proj.weight=truncated-normal,stddev=0.01,lower=-3,upper=3",
            "*.q_proj.weight=he-normal",
        ],
    )
    t = spec["tensors"]
    assert t["model.layers.0.self_attn.o_proj.weight"] == {"shape": [128, 128], "init": "zeros"}
    assert t["model.layers.1.self_attn.o_proj.weight"]["stddev"] == 0.5
    assert t["model.embed_tokens.weight"]["zero_rows"] == [3]
    assert t["model.layers.0.mlp.down_proj.weight"]["lower"] == -3
    # Fan-based initializers take the torch layout [out, in]: fan in is the last axis.
    q = t["model.layers.0.self_attn.q_proj.weight"]
    assert (q["in_axis"], q["out_axis"]) == (-1, -2)
    assert t["model.layers.0.self_attn.k_proj.weight"]["init"] == "truncated-normal"
    assert len(spec["recipe"]["rules"]) == 5


def test_fan_axes_follow_each_tensors_layout():
    """gpt2's Conv1D stores [in, out]: a fan-based rule takes JAX's own default axes there,
    so he-normal's std is sqrt(2 / fan_in) with fan_in the input width in both layouts."""
    for label, name in [
        ("gpt2", "transformer.h.0.mlp.c_fc.weight"),
        ("llama", "model.layers.0.mlp.up_proj.weight"),
    ]:
        spec = weightgen.model_spec(TINY[label], rules=[f"{name}=he-normal"])
        parsed = parse_spec(spec)
        tensor = next(t for t in parsed.plan.tensors if t.name == name)
        fan_in, _ = compute_fans(
            tensor.shape, tensor.params["in_axis"], tensor.params["out_axis"], ()
        )
        assert fan_in == 128, label  # the hidden size feeds both


@pytest.mark.parametrize(
    ("rules", "fragment"),
    [
        (["nothing.*=zeros"], "--rule 'nothing.*=zeros': 'nothing.*' matches no tensor"),
        (["*.o_proj.weight=zeroes"], "unknown initializer 'zeroes'; did you mean zeros?"),
        (["*.o_proj.weight=normal,stdev=1"], "normal has no parameter 'stdev'"),
        (["*.o_proj.weight=normal,stddev=big"], "--stddev: expected a number, got 'big'"),
        (["*.o_proj.weight"], "expected GLOB=INIT[,param=value...]"),
        (["=zeros"], "expected GLOB=INIT[,param=value...]"),
        (["*.o_proj.weight=variance-scaling,scale=1"], "variance-scaling needs mode"),
        (["*norm.weight=orthogonal"], "orthogonal needs a shape of at least 2 dimensions"),
        (["*.embed_tokens.weight=zeros,zero_rows=[999]"], "row 999 is outside axis 0"),
        (["*.o_proj.weight=normal,stddev=1,stddev=2"], "stddev is given twice"),
    ],
)
def test_bad_rules_are_one_line_naming_the_rule(tmp_path, run_cli, rules, fragment):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY["llama"]))
    args = [a for r in rules for a in ("--rule", r)]
    result = run_cli("hf", str(config), "-o", str(tmp_path / "out"), *args)
    assert result.code == 2, result.stderr
    assert fragment in result.stderr and "--rule" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--init", "deepspeed"], "'deepspeed' is not one of 'hf', "),
        (["--init", "neox", "--init-std", "0.01"], "the neox recipe takes no base std"),
        (["--init-std", "0"], "--init-std 0.0: must be a standard deviation above 0"),
        (["--init-std", "nan"], "--init-std nan: must be a standard deviation"),
        (["--init", "megatron", "--init-std", "inf"], "must be a standard deviation"),
    ],
)
def test_bad_recipe_options_are_refused(tmp_path, run_cli, options, fragment):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY["llama"]))
    result = run_cli("hf", str(config), "-o", str(tmp_path / "out"), *options)
    assert result.code == 2 and fragment in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("label", ["gemma", "bert-mlm", "phi3", "olmo2", "mixtral"])
def test_torchtitan_refuses_the_families_it_has_no_model_for(tmp_path, run_cli, label):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY[label]))
    result = run_cli("hf", str(config), "-o", str(tmp_path / "out"), "--init", "torchtitan")
    model_type = TINY[label]["model_type"]
    want = f"--init torchtitan: torchtitan 0.3.0 has no model for {model_type} (it has llama3"
    assert result.code == 2 and want in result.stderr, result.stderr
    assert "--init megatron, neox and olmo2 apply to every family" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_manifest_records_the_recipe_and_replays_byte_for_byte(tmp_path, run_cli):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY["qwen3_moe"]))
    options = ["--init", "megatron", "--init-std", "0.01", "--rule", "*.o_proj.weight=zeros"]
    first = run_cli("hf", str(config), "-o", str(tmp_path / "a"), "-q", *options)
    assert first.code == 0, first.stderr
    manifest = tmp_path / "a" / "weightgen.manifest.json"
    document = json.loads(manifest.read_text())
    assert document["recipe"] == {
        "name": "megatron",
        "init_std": 0.01,
        "rules": ["*.o_proj.weight=zeros"],
    }
    config_json = json.loads((tmp_path / "a" / "config.json").read_text())
    assert "recipe" not in config_json and config_json["initializer_range"] == 0.02
    again = run_cli("run", str(manifest), "-o", str(tmp_path / "b"), "-q")
    assert again.code == 0, again.stderr
    for name in ("config.json", "model.safetensors", "weightgen.manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    spec = run_cli("hf", str(config), "--spec", *options)
    assert json.loads(spec.stdout)["recipe"] == document["recipe"]


def test_a_malformed_recipe_record_is_refused():
    spec = _spec(init="megatron")
    spec["recipe"] = {"name": "megatron", "init_std": "0.02", "rules": []}
    with pytest.raises(weightgen.UsageError, match="'recipe' must be a table"):
        parse_spec(spec)


def test_the_pad_row_is_zeroed_only_by_transformers():
    assert _spec()["tensors"]["model.embed_tokens.weight"]["zero_rows"] == [3]
    for recipe in FORMULAS:
        spec = _spec(**recipe_options(recipe))
        assert "zero_rows" not in spec["tensors"]["model.embed_tokens.weight"]


def test_every_recipe_has_a_rule_for_every_role_of_the_families_it_takes():
    for recipe in hf.RECIPES.values():
        for family in hf.FAMILIES.values():
            if recipe.scheme is None and family.model_type not in recipe.models:
                continue
            scheme = recipe.scheme_for(family.model_type)
            for tensor in family.tensors:
                assert callable(scheme.rule(tensor.role)), (recipe.name, tensor.name)


def test_every_declared_role_is_in_the_vocabulary():
    from weightgen.hf import roles

    for family in hf.FAMILIES.values():
        for tensor in family.tensors:
            role = tensor.role
            assert role in roles.ROLES or role.startswith("special."), (family.model_type, role)


# --- μP (--mup-base-width) and the nanotron recipes -------------------------------------


def test_mup_base_width_scales_megatrons_hidden_weights_and_nothing_else():
    """m = 128 / 32 = 4: init_method σ/2, output_layer_init_method σ/(sqrt(2L)·2); the
    embedding and the untied head keep σ (megatron-core 0.19.2 __post_init__, gpt_model.py).
    A base width equal to the width (m = 1) is megatron without μP."""
    standard = _spec(init="megatron")["tensors"]
    mup = _spec(init="megatron", mup_base_width=32)["tensors"]
    ratios = {name: standard[name].get("stddev", 0) / mup[name].get("stddev", 1) for name in mup}
    assert ratios["model.layers.0.self_attn.q_proj.weight"] == 2.0
    assert ratios["model.layers.1.mlp.down_proj.weight"] == 2.0
    assert ratios["model.embed_tokens.weight"] == ratios["lm_head.weight"] == 1.0
    assert mup["model.norm.weight"] == standard["model.norm.weight"]
    same = _spec(init="megatron", mup_base_width=128)
    assert same["tensors"] == standard
    assert same["recipe"]["mup_base_width"] == 128
    wider = _spec(init="megatron", mup_base_width=512)["tensors"]  # m = 1/4: std doubles
    assert wider["model.layers.0.mlp.up_proj.weight"]["stddev"] == 0.04


def test_nanotron_spectral_takes_the_fused_fans_of_qkv_and_gate_up():
    """llama tiny: d 128, 4 heads and 2 kv heads of 32, I 192. qkv_proj is [256, 128] and
    gate_up_proj [384, 128] in nanotron: each split tensor takes those fans."""
    t = _spec(init="nanotron-spectral")["tensors"]
    fused = 1 / math.sqrt(128)  # fan_out >= fan_in
    for name in ("q_proj", "k_proj", "v_proj"):
        assert t[f"model.layers.0.self_attn.{name}.weight"]["stddev"] == fused, name
    for name in ("gate_proj", "up_proj"):
        assert t[f"model.layers.1.mlp.{name}.weight"]["stddev"] == fused, name
    down = t["model.layers.0.mlp.down_proj.weight"]["stddev"]
    assert down == pytest.approx(1 / math.sqrt(192) * math.sqrt(128 / 192))
    assert t["model.embed_tokens.weight"]["stddev"] == 1.0


def _cli_hf(tmp_path, run_cli, label, *options):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY[label]))
    return run_cli("hf", str(config), "-o", str(tmp_path / "out"), *options)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (
            ["--init", "olmo2", "--mup-base-width", "64"],
            "--mup-base-width: the olmo2 recipe has no μP form; the recipes with a μP base "
            "width: megatron",
        ),
        (["--mup-base-width", "64"], "the hf recipe has no μP form"),
        (
            ["--init", "nanotron-spectral", "--mup-base-width", "64"],
            "nanotron-spectral is μP by construction and takes no base width",
        ),
        (["--init", "megatron", "--mup-base-width", "0"], "--mup-base-width: expected the base"),
        (["--init", "megatron", "--mup-base-width", "-3"], "an integer from 1 to"),
        (["--init", "megatron", "--mup-base-width", "x"], "'x' is not a valid integer"),
        (
            ["--from-transformers", "--mup-base-width", "64"],
            "--mup-base-width: with --from-transformers only hf",
        ),
        (["--init", "nanotron-spectral", "--init-std", "0.1"], "takes no base std"),
    ],
)
def test_bad_mup_options_are_refused_in_one_line(tmp_path, run_cli, options, fragment):
    result = _cli_hf(tmp_path, run_cli, "llama", *options)
    assert result.code == 2 and fragment in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("recipe", ["nanotron", "nanotron-spectral"])
@pytest.mark.parametrize(
    ("label", "fragment"),
    [
        ("qwen3", "nanotron v0.5 has no model for qwen3 (it has llama (llama, mistral))"),
        ("gpt2", "has no model for gpt2"),
        ("llama-tied-bias", "nanotron v0.5's llama has no biases"),
    ],
)
def test_nanotron_refuses_what_its_llama_cannot_express(tmp_path, run_cli, recipe, label, fragment):
    result = _cli_hf(tmp_path, run_cli, label, "--init", recipe)
    assert result.code == 2 and fragment in result.stderr, result.stderr
    assert "--init megatron, neox and olmo2 apply to every family" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


def test_nanotron_refuses_a_head_dim_it_cannot_build():
    config = {**TINY["mistral"], "head_dim": 64}  # nanotron's d_qk is 128 / 4 = 32
    with pytest.raises(weightgen.UsageError, match="head_dim = hidden_size / num_attention_h"):
        weightgen.model_spec(config, init="nanotron")
    assert weightgen.model_spec(config, init="megatron")["tensors"]  # others take it


def test_the_manifest_records_the_base_width_and_replays_byte_for_byte(tmp_path, run_cli):
    options = ["--init", "megatron", "--mup-base-width", "32"]
    first = _cli_hf(tmp_path, run_cli, "qwen3_moe", "-q", *options)
    assert first.code == 0, first.stderr
    manifest = tmp_path / "out" / "weightgen.manifest.json"
    document = json.loads(manifest.read_text())
    want = {"name": "megatron", "init_std": 0.02, "rules": [], "mup_base_width": 32}
    assert document["recipe"] == want
    config_json = json.loads((tmp_path / "out" / "config.json").read_text())
    assert not [k for k in config_json if "mup" in k or "recipe" in k]
    assert config_json == json.loads(
        run_cli("hf", str(tmp_path / "config.json"), "--spec", "--init", "megatron").stdout
    )["hf_config"] | {"dtype": config_json["dtype"], "torch_dtype": config_json["torch_dtype"]}
    again = run_cli("run", str(manifest), "-o", str(tmp_path / "again"), "-q")
    assert again.code == 0, again.stderr
    for name in ("config.json", "model.safetensors", "weightgen.manifest.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    spec = json.loads(run_cli("hf", str(tmp_path / "config.json"), "--spec", *options).stdout)
    assert spec["recipe"] == want
    o_proj = spec["tensors"]["model.layers.0.self_attn.o_proj.weight"]
    assert o_proj["stddev"] == 0.02 / (math.sqrt(2 * 2) * 2)  # the resolved rule
    assert (
        document["tensors"]["model.layers.0.self_attn.o_proj.weight"]["stddev"]
        == (o_proj["stddev"])
    )


@pytest.mark.parametrize("width", [0, "32", 2.5, True])
def test_a_malformed_base_width_in_a_recipe_record_is_refused(width):
    spec = _spec(init="megatron", mup_base_width=32)
    spec["recipe"]["mup_base_width"] = width
    with pytest.raises(weightgen.UsageError, match="'mup_base_width' \\(a positive integer\\)"):
        parse_spec(spec)


def test_every_recipe_is_in_the_readme_and_the_help_names_mup(run_cli):
    """Each recipe is documented with its source; --help shows --mup-base-width with the
    recipes that take it."""
    readme = (HERE.parent / "README.md").read_text()
    for name, recipe in hf.RECIPES.items():
        assert f"`{name}`" in readme, name
        assert recipe.source, name
    assert "--mup-base-width W" in readme and "mup_base_width" in readme
    assert hf.mup_recipes() == ["megatron"]
    help_text = " ".join(run_cli("hf", "--help").stdout.split())
    assert "--mup-base-width" in help_text and "megatron: megatron-core's use_mup" in help_text
