"""The JAX trainers' recipes against their own initializers: ``--init maxtext`` against
``jax.nn.initializers`` applied as MaxText 0.2.5 applies them, ``--init levanter`` against
haliax 1.4.dev453's own layers.

- MaxText needs Python >= 3.12 and a large dependency set, and its decoder init *is*
  ``jax.nn.initializers.variance_scaling``: the oracle is that call itself on MaxText's
  kernel shapes ([in, out]; experts [E, in, out]) with the in/out axes MaxText's layers give
  it, restated below from the 0.2.5 wheel (each row cites its file and class). What weightgen
  writes in torch's layout ([out, in], one tensor per expert) is compared as a distribution:
  std within sampling error of the oracle's, the truncation bound, the mean.
- haliax installs here (tests/requirements-haliax.txt): its client builds each layer as
  Levanter's model code builds it, with the key weightgen gives that tensor, and the bytes
  must be equal; experts (one key for all in haliax, one per expert in weightgen) compare
  as distributions.

Without haliax installed the Levanter tests skip, naming the fix, except in CI.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_client

import weightgen
from weightgen.plan import name_fold_in

HERE = Path(__file__).parent
HALIAX = HERE.parent / ".venv" / "trainers" / "haliax"  # make install-test puts it here
SEED = 5
Z = 5.0  # standard errors

BASE = {
    "vocab_size": 512,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "pad_token_id": 3,
}
CONFIGS = {
    "llama": {**BASE, "model_type": "llama"},
    "llama-tied": {**BASE, "model_type": "llama", "tie_word_embeddings": True},
    "mixtral": {
        **BASE,
        "model_type": "mixtral",
        "intermediate_size": 128,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
    },
    "qwen3_moe": {
        **BASE,
        "model_type": "qwen3_moe",
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 128,
        "mlp_only_layers": [1],
    },
    "qwen2": {**BASE, "model_type": "qwen2", "tie_word_embeddings": True},
    "olmo2": {**BASE, "model_type": "olmo2"},
    "olmo3": {**BASE, "model_type": "olmo3"},
    "gemma": {**BASE, "model_type": "gemma"},
    "gemma2": {**BASE, "model_type": "gemma2"},
    "gemma3_text": {**BASE, "model_type": "gemma3_text"},
}


def _sizes(c: dict) -> dict:
    experts = c.get("num_local_experts") or c.get("num_experts")
    moe = c.get("moe_intermediate_size") or c["intermediate_size"]
    return {
        "V": c["vocab_size"],
        "d": c["hidden_size"],
        "I": c["intermediate_size"],
        "H": c["num_attention_heads"],
        "KV": c["num_key_value_heads"],
        "hd": c["head_dim"],
        "E": experts,
        "moeI": moe,
    }


def _std_error(std: float, n: int) -> float:
    return std * math.sqrt(2 / (4 * n))


def _same_distribution(name: str, ours: np.ndarray, theirs: np.ndarray) -> list[str]:
    """Two samples of one distribution: std and mean within Z standard errors."""
    a, b = ours.astype(np.float64).ravel(), theirs.astype(np.float64).ravel()
    s = max(a.std(), b.std())
    problems = []
    tolerance = Z * math.hypot(_std_error(s, a.size), _std_error(s, b.size))
    if abs(a.std() - b.std()) > tolerance:
        problems.append(f"{name}: std {a.std():.6g}, the trainer's {b.std():.6g}")
    if abs(a.mean() - b.mean()) > Z * s * math.sqrt(1 / a.size + 1 / b.size):
        problems.append(f"{name}: mean {a.mean():.3g}, the trainer's {b.mean():.3g}")
    return problems


# --- MaxText 0.2.5 ----------------------------------------------------------------------
# HF name pattern -> how MaxText initialises the same weight: ("vs", distribution, MaxText's
# kernel shape, in_axis, out_axis, divisor) for nd_dense_init(1.0, "fan_in", distribution)
# (layers/initializers.py), ("normal", std), ("ones",), ("zeros",). Experts are pooled per
# layer and projection: MaxText holds them in one kernel.
QUERY_DIVIDED = {"llama", "mixtral"}  # attentions.py init_query_w: no qk norm, no scalar


def maxtext_kernel(name: str, s: dict, model_type: str):
    hd = s["hd"]
    table = [
        # models/models.py Transformer: token_embedder normal(stddev=1.0)
        (r"embed_tokens\.weight$", ("normal", 1.0)),
        # layers/attentions.py Attention.init_query_w: (emb, heads, head_dim) / sqrt(head_dim)
        (
            r"q_proj\.weight$",
            (
                "vs",
                "normal",
                (s["d"], s["H"], hd),
                (0,),
                (1, 2),
                math.sqrt(hd) if model_type in QUERY_DIVIDED else 1.0,
            ),
        ),
        (r"[kv]_proj\.weight$", ("vs", "normal", (s["d"], s["KV"], hd), (0,), (1, 2), 1.0)),
        # Attention.init_out_w: (heads, head_dim, emb)
        (r"o_proj\.weight$", ("vs", "normal", (s["H"], hd, s["d"]), (0, 1), (2,), 1.0)),
        # layers/moe.py RoutedMoE: wi_0, wi_1 (E, emb, mlp), wo (E, mlp, emb), axes (0,), (1,)
        (
            r"experts\.\d+\.(w1|w3|gate_proj|up_proj)\.weight$",
            ("vs", "truncated_normal", (s["E"], s["d"], s["moeI"]), (0,), (1,), 1.0),
        ),
        (
            r"experts\.\d+\.(w2|down_proj)\.weight$",
            ("vs", "truncated_normal", (s["E"], s["moeI"], s["d"]), (0,), (1,), 1.0),
        ),
        # moe.py GateLogit: (emb, E)
        (
            r"(block_sparse_moe|mlp)\.gate\.weight$",
            ("vs", "truncated_normal", (s["d"], s["E"]), (0,), (1,), 1.0),
        ),
        # layers/linears.py MlpBlock: wi_0, wi_1 (emb, mlp), wo (mlp, emb)
        (
            r"mlp\.(gate|up)_proj\.weight$",
            ("vs", "truncated_normal", (s["d"], s["I"]), (0,), (1,), 1.0),
        ),
        (r"mlp\.down_proj\.weight$", ("vs", "truncated_normal", (s["I"], s["d"]), (0,), (1,), 1.0)),
        # layers/nnx_decoders.py logits_dense: DenseGeneral (emb, vocab)
        (r"^lm_head\.weight$", ("vs", "truncated_normal", (s["d"], s["V"]), (0,), (1,), 1.0)),
        (r"norm\.weight$", ("ones",)),  # layers/normalizations.py RMSNorm scale_init ones
        (r"\.bias$", ("zeros",)),  # initializers.py default_bias_init
    ]
    for pattern, rule in table:
        if re.search(pattern, name):
            return rule
    raise AssertionError(f"{name}: no MaxText rule in the test's table")


def maxtext_oracle(rule, seed: int = 0) -> np.ndarray:
    """jax.nn.initializers itself, on MaxText's shape and axes."""
    import jax

    key = jax.random.key(seed)
    if rule[0] == "normal":
        return np.asarray(jax.nn.initializers.normal(rule[1])(key, (512, 256)))
    _, distribution, shape, in_axis, out_axis, divisor = rule
    init = jax.nn.initializers.variance_scaling(1.0, "fan_in", distribution, in_axis, out_axis)
    return np.asarray(init(key, shape)) / divisor


MAXTEXT_CASES = ["llama", "llama-tied", "mixtral", "qwen3_moe", "qwen2", "olmo3"]


@pytest.fixture(scope="module")
def maxtext_written(tmp_path_factory):
    root = tmp_path_factory.mktemp("maxtext")
    out = {}
    for label in MAXTEXT_CASES:
        folder = root / label
        weightgen.write_model(CONFIGS[label], folder, init="maxtext", dtype="float32", seed=SEED)
        out[label] = folder
    return out


@pytest.mark.slow
@pytest.mark.parametrize("label", MAXTEXT_CASES)
def test_maxtext_every_tensor_has_maxtexts_distribution(maxtext_written, label):
    config = CONFIGS[label]
    s = _sizes(config)
    values = weightgen.load(maxtext_written[label])
    groups: dict[str, list[np.ndarray]] = {}
    rules = {}
    for name, array in values.items():
        key = re.sub(r"experts\.\d+\.", "experts.*.", name)
        groups.setdefault(key, []).append(array)
        rules[key] = maxtext_kernel(name, s, config["model_type"])
    problems = []
    for key, arrays in sorted(groups.items()):
        rule, ours = rules[key], np.concatenate([a.ravel() for a in arrays])
        if rule[0] == "ones":
            problems += [] if (ours == 1).all() else [f"{key}: not all ones"]
            continue
        if rule[0] == "zeros":
            problems += [] if not ours.any() else [f"{key}: not all zeros"]
            continue
        theirs = maxtext_oracle(rule)
        problems += _same_distribution(key, ours, theirs)
        if rule[0] == "vs" and rule[1] == "truncated_normal":
            # JAX's truncated variance scaling: cut at ±2 of a normal renormalised by
            # .87962566, i.e. at 2 / .87962566 = 2.2737 stds of the result.
            bound = 2 / 0.87962566103423978 * theirs.std() * (1 + Z * math.sqrt(0.5 / theirs.size))
            if np.abs(ours).max() > bound:
                problems.append(
                    f"{key}: max |x| {np.abs(ours).max():.4g} beyond the cut {bound:.4g}"
                )
        if ours.ndim >= 1 and key.startswith("model.embed_tokens"):
            assert ours.reshape(values[key].shape).any(axis=1).all()  # no padding row zeroed
    assert not problems, "\n".join(problems)


def test_maxtext_expert_fan_is_experts_times_out_width():
    """JAX's _compute_fans on MaxText's expert kernel (E, in, out) with in_axis (0,),
    out_axis (1,) takes E as the input size and the last axis as the receptive field: the
    std is 1/sqrt(E * out), not 1/sqrt(in). weightgen's per-expert tensors get that std."""
    import jax

    E, d, moe = 4, 256, 128
    init = jax.nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", (0,), (1,))
    measured = float(np.asarray(init(jax.random.key(1), (E, d, moe))).std())
    assert abs(measured - (E * moe) ** -0.5) < 0.01 * (E * moe) ** -0.5
    assert abs(measured - d**-0.5) > 0.2 * d**-0.5  # the input width is not the fan
    spec = weightgen.model_spec(CONFIGS["mixtral"], init="maxtext")["tensors"]
    w1 = spec["model.layers.0.block_sparse_moe.experts.2.w1.weight"]  # [moe, d]
    from weightgen.initializers import compute_fans

    fan_in, _ = compute_fans(w1["shape"], w1["in_axis"], w1["out_axis"], ())
    assert w1["scale"] / fan_in == pytest.approx(1 / (E * moe))


def test_maxtext_query_is_divided_by_sqrt_head_dim_only_without_qk_norm_or_scalar():
    """attentions.py init_query_w: llama2 and mixtral divide the query kernel by
    sqrt(head_dim); qwen2, qwen3 and olmo3 pass query_pre_attn_scalar, so they do not."""
    name = "model.layers.0.self_attn.q_proj.weight"
    for label, divided in [
        ("llama", True),
        ("mixtral", True),
        ("qwen2", False),
        ("qwen3_moe", False),
        ("olmo3", False),
    ]:
        q = weightgen.model_spec(CONFIGS[label], init="maxtext")["tensors"][name]
        assert q["scale"] == (1 / 64 if divided else 1.0), label


@pytest.mark.parametrize(
    ("recipe", "label", "model_type"),
    [
        ("maxtext", "deepseek_v3", "deepseek_v3"),
        ("maxtext", "gpt_oss", "gpt_oss"),
        ("maxtext", "gemma2", "gemma2"),
        ("maxtext", "bert-mlm", "bert"),
        ("levanter", "qwen3_moe", "qwen3_moe"),
        ("levanter", "deepseek_v3", "deepseek_v3"),
        ("levanter", "gpt2", "gpt2"),
    ],
)
def test_the_jax_recipes_refuse_the_families_they_have_no_model_for(
    tmp_path, run_cli, recipe, label, model_type
):
    config = tmp_path / "config.json"
    config.write_text((HERE / "data" / "hf_tiny" / f"{label}.json").read_text())
    result = run_cli("hf", str(config), "-o", str(tmp_path / "out"), "--init", recipe)
    assert result.code == 2, result.stderr
    assert (
        f"--init {recipe}: " in result.stderr and f"has no model for {model_type}" in result.stderr
    )
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("recipe", ["maxtext", "levanter"])
def test_the_jax_recipes_take_no_base_std(tmp_path, run_cli, recipe):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIGS["llama"]))
    result = run_cli(
        "hf", str(config), "-o", str(tmp_path / "o"), "--init", recipe, "--init-std", "0.01"
    )
    assert result.code == 2 and f"the {recipe} recipe takes no base std" in result.stderr


@pytest.mark.parametrize("recipe", ["maxtext", "levanter"])
def test_the_jax_recipes_replay_byte_for_byte_and_inspect_clean(tmp_path, run_cli, recipe):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIGS["mixtral"]))
    first = run_cli("hf", str(config), "-o", str(tmp_path / "a"), "-q", "--init", recipe)
    assert first.code == 0, first.stderr
    manifest = tmp_path / "a" / "weightgen.manifest.json"
    assert json.loads(manifest.read_text())["recipe"] == {
        "name": recipe,
        "init_std": None,
        "rules": [],
    }
    again = run_cli("run", str(manifest), "-o", str(tmp_path / "b"), "-q")
    assert again.code == 0, again.stderr
    for name in ("config.json", "model.safetensors", "weightgen.manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    report = json.loads(run_cli("inspect", str(tmp_path / "a"), "--json").stdout)
    assert all(t["expected"] is not None for t in report["tensors"])
    assert [t["name"] for t in report["tensors"] if t["off"]] == []


# --- Levanter (haliax 1.4.dev453) --------------------------------------------------------
# HF name pattern -> the haliax layer Levanter's model code builds for it, with its In and
# Out axes (levanter/models/llama.py LlamaMlp, LlamaEmbedding, LlamaLMHeadModel;
# levanter/layers/attention.py Attention.init; levanter/models/mixtral.py
# MixtralSparseMoeBlock, MixtralMoEMlp), each at the default init_scale.


def levanter_layer(name: str, s: dict):
    table = [
        (r"embed_tokens\.weight$", ("embedding", {"embed": s["d"]}, {"vocab": s["V"]})),
        (
            r"q_proj\.weight$",
            (
                "linear",
                {"embed": s["d"]},
                {"kv_heads": s["KV"], "q_heads_per_group": s["H"] // s["KV"], "head_size": s["hd"]},
            ),
        ),
        (
            r"[kv]_proj\.weight$",
            ("linear", {"embed": s["d"]}, {"kv_heads": s["KV"], "head_size": s["hd"]}),
        ),
        (
            r"o_proj\.weight$",
            ("linear", {"heads": s["H"], "head_size": s["hd"]}, {"embed": s["d"]}),
        ),
        (r"experts\.\d+\.w[13]\.weight$", ("moe_linear", {"embed": s["d"]}, {"mlp": s["moeI"]})),
        (r"experts\.\d+\.w2\.weight$", ("moe_linear", {"mlp": s["moeI"]}, {"embed": s["d"]})),
        (r"block_sparse_moe\.gate\.weight$", ("linear", {"embed": s["d"]}, {"experts": s["E"]})),
        (r"mlp\.(gate|up)_proj\.weight$", ("linear", {"embed": s["d"]}, {"mlp": s["I"]})),
        (r"mlp\.down_proj\.weight$", ("linear", {"mlp": s["I"]}, {"embed": s["d"]})),
        (r"^lm_head\.weight$", ("linear", {"embed": s["d"]}, {"vocab": s["V"]})),
        (r"norm\.weight$", ("identity",)),  # RmsNorm ones; GemmaRMSNorm zeros (x * (1 + w))
    ]
    for pattern, rule in table:
        if re.search(pattern, name):
            return rule
    raise AssertionError(f"{name}: no Levanter layer in the test's table")


LEVANTER_CASES = ["llama", "llama-tied", "mixtral", "olmo2", "gemma", "gemma2", "gemma3_text"]


@pytest.fixture(scope="module")
def haliax_reports(tmp_path_factory):
    if not HALIAX.is_dir():
        message = f"haliax is not installed in {HALIAX}: run make install-test"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("levanter")
    jobs, keys, folders = [], [], {}
    for label in LEVANTER_CASES:
        config = CONFIGS[label]
        folder = root / label
        weightgen.write_model(config, folder, init="levanter", dtype="float32", seed=SEED)
        folders[label] = folder
        s = _sizes(config)
        for name in weightgen.model_spec(config, init="levanter")["tensors"]:
            rule = levanter_layer(name, s)
            if rule[0] == "identity" or (rule[0] == "moe_linear" and ".experts.0." not in name):
                continue
            job = {"label": label, "layer": rule[0], "in": rule[1], "out": rule[2]}
            job.update(experts=s["E"], seed=SEED, fold=name_fold_in(name))
            jobs.append(job)
            keys.append((label, name))
    answer = run_client(
        HERE / "trainers" / "haliax_client.py", jobs, root / "jobs.json", str(HALIAX)
    )
    assert answer["version"] == "1.4.dev453", answer["version"]
    return folders, dict(zip(keys, answer["reports"], strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("label", LEVANTER_CASES)
def test_levanter_every_tensor_is_haliaxs_own_layer(haliax_reports, label):
    """Byte for byte where haliax draws the tensor alone (the same key, the same
    jax.random.truncated_normal(-3, 3) times 1/sqrt(fan_in) or 1/d); experts, which haliax
    draws from one key, as distributions; norms at the identity."""
    folders, reports = haliax_reports
    config = CONFIGS[label]
    values = weightgen.load(folders[label])
    family_spec = weightgen.model_spec(config)["tensors"]
    problems = []
    for name, array in values.items():
        rule = levanter_layer(name, _sizes(config))
        if rule[0] == "identity":
            want = 0.0 if family_spec[name]["init"] == "zeros" else 1.0
            problems += [] if (array == want).all() else [f"{name}: not all {want}"]
            continue
        if rule[0] == "moe_linear":
            if ".experts.0." not in name:
                continue
            report = reports[(label, name)]
            assert report["ok"], report.get("error")
            pattern = name.replace(".experts.0.", ".experts.{}.")
            ours = np.stack([values[pattern.format(e)] for e in range(config["num_local_experts"])])
            assert list(ours.shape) == report["shape"], name
            theirs = report["stats"]
            # both samples of one distribution; the cut is ±3 x 1/sqrt(fan_in), not renormalised
            tolerance = Z * math.hypot(
                _std_error(theirs["std"], theirs["numel"]), _std_error(ours.std(), ours.size)
            )
            if abs(float(ours.std()) - theirs["std"]) > tolerance:
                problems.append(
                    f"{name} (pooled): std {ours.std():.6g}, haliax {theirs['std']:.6g}"
                )
            fan_in = math.prod(rule[1].values())
            if np.abs(ours).max() > 3 * fan_in**-0.5 * (1 + 1e-6):
                problems.append(f"{name}: max |x| beyond ±3/sqrt({fan_in})")
            continue
        report = reports[(label, name)]
        assert report["ok"], report.get("error")
        assert math.prod(report["shape"]) == array.size and report["dtype"] == "float32"
        if hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest() != report["sha256"]:
            problems.append(f"{name}: bytes differ from haliax's {rule[0]} {rule[1]} -> {rule[2]}")
    assert not problems, "\n".join(problems)


def test_levanter_linear_std_is_nominal_times_the_uncorrected_cut():
    """haliax does not renormalise its ±3 cut: std = 0.98658 / sqrt(fan_in); the embedding's
    nominal std is 1/d."""
    from scipy.stats import truncnorm

    spec = weightgen.model_spec(CONFIGS["llama"], init="levanter")["tensors"]
    down = spec["model.layers.0.mlp.down_proj.weight"]
    assert (down["init"], down["stddev"], down["lower"], down["upper"]) == (
        "truncated-normal",
        512**-0.5,
        -3.0,
        3.0,
    )
    assert spec["model.embed_tokens.weight"]["stddev"] == 1 / 256
    assert truncnorm.std(-3, 3) == pytest.approx(0.98658, abs=1e-5)
