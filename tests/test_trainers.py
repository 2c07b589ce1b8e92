"""Init recipes against the trainers themselves: each trainer that installs here builds tiny
models with its own builders and its own init on CPU (tests/trainers/*_client.py, each in a
process of its own with only its trainer on the path), weightgen writes Hugging Face models of
the same sizes with that trainer's recipe, and the two are compared tensor by tensor.

- torchtitan 0.3.0 (``--init torchtitan``): by Hugging Face name, through torchtitan's own
  state-dict adapter (the one ``--checkpoint.initial_load_in_hf`` loads a folder with), so
  both sides hold the same set of names.
- megatron-core 0.19.2 (``--init megatron``, and with ``--mup-base-width`` against
  ``use_mup=True, mup_base_hidden_size``) and OLMo-core 3.0.0 (``--init olmo2``): by role,
  each trainer parameter given a role by the tables below (MEGATRON_ROLES, OLMO_ROLES), and
  every parameter of one role in one layer pooled on each side (megatron's fused linear_qkv
  against q, k and v; OLMo-core's experts' w1 [E*H, D] against E gate_proj [H, D]).

Each pair of tensors (or pools) must have: the same number of values (the sizes agree);
zeros exactly where the trainer has zeros and ones where it has ones; otherwise a std within
sampling error of the trainer's own measured std and a mean within sampling error of it (both
are samples: the tolerance comes from both counts); |x| within the trainer's truncation bound
where the trainer truncates (truncated_at); no all-zero row on either side (no zeroed padding
row: the decoder configs set pad_token_id); and the same change of std with depth (layer 0
against the last layer) as the trainer's. torch's RNG is not JAX's: values are compared as
distributions, never bytes. The formulas themselves are held to each trainer's source in
test_recipes.py; the trainers that do not install here (GPT-NeoX) are only tested there.

`make install-test` installs the trainers (see the Makefile). Without them the tests skip,
naming the fix, except in CI (the CI environment variable set), where they fail.
"""

from __future__ import annotations

import math
import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import run_client

import weightgen
from weightgen import hf

HERE = Path(__file__).parent
TRAINERS_DIR = HERE.parent / ".venv" / "trainers"  # make install-test puts them here


@dataclass(frozen=True)
class Trainer:
    name: str  # what it is, with the version its client was checked against
    folder: str  # its folder under .venv/trainers
    client: str  # tests/trainers/<client>
    recipe: str  # weightgen's recipe for it


TRAINERS = {
    "torchtitan": Trainer("torchtitan 0.3.0", "torchtitan", "titan_client.py", "torchtitan"),
    "megatron": Trainer("megatron-core 0.19.2", "megatron", "megatron_client.py", "megatron"),
    "olmo": Trainer("ai2-olmo-core 3.0.0", "olmo", "olmo_client.py", "olmo2"),
}


@dataclass(frozen=True)
class Case:
    trainer: str
    label: str
    model: str  # the trainer's model (see its client)
    family: str  # the Hugging Face model_type of the same tensors
    sizes: dict  # both sides' sizes, in the clients' names

    @property
    def config(self) -> dict:
        return hf_config(self.family, self.sizes)


def hf_config(family: str, s: dict) -> dict:
    """The Hugging Face config of a case's sizes (pad_token_id set: nobody zeroes its row)."""
    if family == "gpt2":
        return {
            "model_type": "gpt2",
            "vocab_size": s["vocab"],
            "n_embd": s["hidden"],
            "n_layer": s["layers"],
            "n_head": s["heads"],
            "n_inner": s["ffn"],
            "n_positions": s["positions"],
            "tie_word_embeddings": s["tied"],
        }
    config = {
        "model_type": family,
        "vocab_size": s["vocab"],
        "hidden_size": s["hidden"],
        "intermediate_size": s["ffn"],
        "num_hidden_layers": s["layers"],
        "num_attention_heads": s["heads"],
        "num_key_value_heads": s["kv_heads"],
        "tie_word_embeddings": s["tied"],
        "pad_token_id": 3,
    }
    if "head_dim" in s:
        config["head_dim"] = s["head_dim"]
    if family == "qwen3_moe":  # every layer sparse
        config.update(
            num_experts=s["experts"],
            num_experts_per_tok=s["top_k"],
            moe_intermediate_size=s["expert_ffn"],
            mlp_only_layers=[],
        )
    elif family == "deepseek_v3":
        config.update({k: s[k] for k in MLA})
        config.update(
            n_routed_experts=s["experts"],
            num_experts_per_tok=s["top_k"],
            moe_intermediate_size=s["expert_ffn"],
            n_shared_experts=s["shared_experts"],
            first_k_dense_replace=s["dense_layers"],
            n_group=1,
            topk_group=1,
        )
    elif family == "qwen2_moe":  # every layer sparse, with a gated shared expert
        config.update(
            num_experts=s["experts"],
            num_experts_per_tok=s["top_k"],
            moe_intermediate_size=s["expert_ffn"],
            shared_expert_intermediate_size=s["shared_experts"] * s["expert_ffn"],
            mlp_only_layers=[],
            qkv_bias=True,
        )
    elif family == "gpt_oss":  # every layer sparse; its experts' width is intermediate_size
        config.update(
            num_local_experts=s["experts"],
            num_experts_per_tok=s["top_k"],
            intermediate_size=s["expert_ffn"],
            attention_bias=True,
        )
    return config


# --- The cases --------------------------------------------------------------------------
# Wide enough that a std is measured to ~1% (tensors of 16k-130k values), deep enough (4
# layers) that depth scaling shows: layer 0 against layer 3 is a factor 2 in torchtitan.

L = 4
BASE = dict(hidden=256, layers=L, vocab=512, heads=4, kv_heads=2, head_dim=64, ffn=512)
UNTIED, TIED = {**BASE, "tied": False}, {**BASE, "tied": True}
MOE = {**UNTIED, "experts": 4, "top_k": 2, "expert_ffn": 128}
MLA = {"q_lora_rank": 128, "kv_lora_rank": 64, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16}
MLA["v_head_dim"] = 32
DEEPSEEK = {k: v for k, v in MOE.items() if k != "head_dim"}
DEEPSEEK.update(MLA, kv_heads=4, shared_experts=1, dense_layers=1)
GPT2 = {**BASE, "kv_heads": 4, "ffn": 1024, "positions": 128, "tied": True}
# olmo2_30M's own: d_model 256, 8 heads (head_dim 32), feed-forward 768.
OLMO2 = {**BASE, "heads": 8, "kv_heads": 8, "ffn": 768}
del OLMO2["head_dim"]

CASES = {
    f"{c.trainer}-{c.label}": c
    for c in [
        Case("torchtitan", "llama3-untied", "llama3", "llama", UNTIED),
        Case("torchtitan", "llama3-tied", "llama3", "llama", TIED),
        Case("torchtitan", "qwen3-untied", "qwen3", "qwen3", UNTIED),
        Case("torchtitan", "qwen3-tied", "qwen3", "qwen3", TIED),
        Case("torchtitan", "qwen3_moe", "qwen3", "qwen3_moe", MOE),
        Case("torchtitan", "deepseek_v3-q_lora", "deepseek_v3", "deepseek_v3", DEEPSEEK),
        Case(
            "torchtitan",
            "deepseek_v3-q_full",
            "deepseek_v3",
            "deepseek_v3",
            {**DEEPSEEK, "q_lora_rank": None},
        ),
        Case("torchtitan", "gpt_oss", "gpt_oss", "gpt_oss", MOE),
        # LayerNorm with biases, biases on every linear, learned positions, tied (Megatron-LM's
        # default; GPTModel's own is untied).
        Case("megatron", "gpt2", "gpt2", "gpt2", GPT2),
        Case("megatron", "qwen3", "qwen3", "qwen3", UNTIED),
        Case("megatron", "qwen3_moe", "qwen3_moe", "qwen3_moe", MOE),
        Case("megatron", "deepseek_v3", "deepseek_v3", "deepseek_v3", DEEPSEEK),
        Case("megatron", "qwen2_moe", "qwen2_moe", "qwen2_moe", {**MOE, "shared_experts": 2}),
        Case("megatron", "gpt_oss", "gpt_oss", "gpt_oss", MOE),
        # μP (--mup-base-width): megatron-core built with use_mup=True and a base width other
        # than the width, smaller (m = 4: hidden weights at half the std) and larger (m = 1/4,
        # tied, learned positions, biases); dense, MoE, MoE with a gated shared expert, and
        # MLA with dense first layers, an expert bias and shared experts.
        Case("megatron", "qwen3-mup64", "qwen3", "qwen3", {**UNTIED, "mup_base": 64}),
        Case("megatron", "qwen3_moe-mup64", "qwen3_moe", "qwen3_moe", {**MOE, "mup_base": 64}),
        Case(
            "megatron",
            "qwen2_moe-mup64",
            "qwen2_moe",
            "qwen2_moe",
            {**MOE, "shared_experts": 2, "mup_base": 64},
        ),
        Case("megatron", "gpt2-mup1024", "gpt2", "gpt2", {**GPT2, "mup_base": 1024}),
        Case(
            "megatron",
            "deepseek_v3-mup64",
            "deepseek_v3",
            "deepseek_v3",
            {**DEEPSEEK, "mup_base": 64},
        ),
        Case("olmo", "olmo2-untied", "olmo2", "olmo2", {**OLMO2, "tied": False}),
        Case("olmo", "olmo2-tied", "olmo2", "olmo2", {**OLMO2, "tied": True}),
        # OLMoE's layers: weightgen has no olmoe family, but qwen3_moe has the same tensors
        # once OLMo-core's q/k norms are per head (the client sets that). No shared experts:
        # OLMo-core's InitMethod never visits an MoE's shared_mlp, which keeps nn.Linear's
        # kaiming-uniform init from the global RNG (biases too), where --init olmo2 gives it
        # the truncated normal of every other matrix; no OLMo release has one.
        Case("olmo", "olmoe", "olmoe", "qwen3_moe", {**MOE, "kv_heads": 4}),
    ]
}


# --- Roles of the trainers' own parameters --------------------------------------------------
# (pattern searched in the trainer's name, weightgen role), first match wins. A name that
# matches none fails the test: a trainer parameter the table does not know.

# megatron-core 0.19.2: megatron/core/models/common/embeddings/language_model_embedding.py
# (word and position embeddings), models/gpt/gpt_model.py (output_layer), transformer/
# attention.py (linear_qkv, linear_proj, q/k_layernorm), transformer/multi_latent_attention.py
# (linear_q_proj, linear_q_down_proj, linear_q_up_proj, linear_kv_down_proj,
# linear_kv_up_proj, q_layernorm, kv_layernorm), transformer/mlp.py (linear_fc1, linear_fc2),
# transformer/moe/experts.py (SequentialMLP local_experts), moe/shared_experts.py (linear_fc1,
# linear_fc2, gate_weight), moe/router.py (weight, bias, expert_bias).
MEGATRON_ROLES = [
    (r"^embedding\.(word|position)_embeddings\.weight$", "embedding"),
    (r"^output_layer\.weight$", "head"),
    (r"layernorm\.weight$", "norm"),
    (r"\.linear_(qkv|q_proj|q_down_proj|q_up_proj|kv_down_proj|kv_up_proj)\.weight$", "attn_in"),
    (r"\.linear_proj\.weight$", "attn_out"),
    (r"\.local_experts\.\d+\.linear_fc1\.weight$", "expert_in"),
    (r"\.local_experts\.\d+\.linear_fc2\.weight$", "expert_out"),
    (r"\.shared_experts\.linear_fc1\.weight$", "mlp_in.shared"),
    (r"\.shared_experts\.linear_fc2\.weight$", "mlp_out.shared"),
    (r"\.shared_experts\.gate_weight$", "router.shared_expert_gate"),  # the sigmoid gate
    (r"\.mlp\.linear_fc1\.weight$", "mlp_in"),
    (r"\.mlp\.linear_fc2\.weight$", "mlp_out"),
    (r"\.router\.weight$", "router"),
    (r"\.router\.bias$", "bias.router"),  # drawn like the router's weight: init_method
    (r"\.router\.expert_bias$", "bias"),  # the aux-loss-free balancing bias: zeros
    (r"\.bias$", "bias"),  # every other bias (LayerNorm's too)
]

# ai2-olmo-core 3.0.0: olmo_core/nn/transformer/model.py (embeddings, blocks, lm_head),
# nn/attention/__init__.py (w_q, w_k, w_v, w_out, q_norm, k_norm), nn/transformer/block.py
# (attention_norm, feed_forward_norm), nn/feed_forward.py (w1 gate, w3 up, w2 down),
# nn/moe/router.py (router.weight, flat [E * D]), nn/moe/mlp.py (experts.mlp.w1/w3 [E*H, D],
# w2 [E*H, D]), nn/lm_head.py (w_out, norm); their init in nn/transformer/init.py.
OLMO_ROLES = [
    (r"^embeddings\.weight$", "embedding"),
    (r"^lm_head\.w_out\.weight$", "head"),
    (r"norm\.weight$", "norm"),
    (r"\.attention\.w_[qkv]\.weight$", "attn_in"),
    (r"\.attention\.w_out\.weight$", "attn_out"),
    (r"\.feed_forward\.w1\.weight$", "mlp_in.gate"),
    (r"\.feed_forward\.w3\.weight$", "mlp_in.up"),
    (r"\.feed_forward\.w2\.weight$", "mlp_out"),
    (r"\.feed_forward_moe\.router\.weight$", "router"),
    (r"\.experts\.mlp\.w1$", "expert_in.gate"),
    (r"\.experts\.mlp\.w3$", "expert_in.up"),
    (r"\.experts\.mlp\.w2$", "expert_out"),
]
ROLE_TABLES = {"megatron": MEGATRON_ROLES, "olmo": OLMO_ROLES}
LAYER = {"megatron": r"\.layers\.(\d+)\.", "olmo": r"^blocks\.(\d+)\.", "torchtitan": None}

# Where each trainer truncates, and at how many stds; everywhere else it draws plain normals
# (torchtitan's trunc_normal_(std=s) keeps torch's absolute ±2 bounds, ~100 s: no cut).
# torchtitan: models/{llama3,deepseek_v3,gpt_oss}/__init__.py _output_linear_init, the head
# (and so a tied embedding, which torchtitan initialises as the head, models/common/
# decoder.py); its qwen3 draws the head normal_. OLMo-core: nn/transformer/init.py
# init_linear and init_embeddings, trunc_normal_(a=-3 std, b=3 std) for every matrix.
TITAN_TRUNCATED = {"llama3": 3.0, "deepseek_v3": 3.0, "gpt_oss": 3.0}


def truncated_at(case: Case, key: str) -> float | None:
    if case.trainer == "olmo":
        return 3.0 if key.split("@")[0] != "norm" else None
    if case.trainer == "torchtitan":
        head = key == "lm_head.weight" or (
            key == "model.embed_tokens.weight" and case.sizes["tied"]
        )
        return TITAN_TRUNCATED.get(case.model) if head else None
    return None


# --- Running the trainers ------------------------------------------------------------------


def _installed(trainer: Trainer) -> Path:
    folder = TRAINERS_DIR / trainer.folder
    if not folder.is_dir():
        message = f"{trainer.name} is not installed in {folder}: run make install-test"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


def _family_present(case: Case) -> None:
    if case.family not in hf.FAMILIES:
        pytest.skip(f"{case.family} is not a weightgen family (yet): nothing to compare")


def _run_client(trainer: Trainer, cases: list[Case], tmp: Path) -> dict[str, dict]:
    jobs = [{"label": c.label, "model": c.model, "args": c.sizes, "seed": 0} for c in cases]
    answer = run_client(
        HERE / "trainers" / trainer.client,
        jobs,
        tmp / f"{trainer.folder}-jobs.json",
        str(TRAINERS_DIR / trainer.folder),
        PYTHONWARNINGS="ignore",
    )
    return {c.label: r for c, r in zip(cases, answer["reports"], strict=True)}


@pytest.fixture(scope="module")
def oracles(request, tmp_path_factory):
    """Each trainer's reports on every case it can be compared on, from one client process
    per trainer: on first use, the clients of every trainer the selected tests need start
    side by side."""
    tmp = tmp_path_factory.mktemp("trainers")
    pool = ThreadPoolExecutor(max_workers=len(TRAINERS))
    started: dict[str, Future] = {}

    def start() -> None:
        needed = set()
        for item in request.session.items:
            if item.name == "test_torchtitan_llama3_depth_init_is_visible":
                needed.add("torchtitan")
            if item.name.startswith("test_megatron_mup_width_scaling_is_visible"):
                needed.add("megatron")
            label = getattr(item, "callspec", None) and item.callspec.params.get("case_data")
            if label:
                needed.add(CASES[label].trainer)
        for key in needed:
            cases = [c for c in CASES.values() if c.trainer == key and c.family in hf.FAMILIES]
            if (TRAINERS_DIR / TRAINERS[key].folder).is_dir():
                started[key] = pool.submit(_run_client, TRAINERS[key], cases, tmp)

    def get(case: Case) -> dict:
        if not started:
            start()
        return started[case.trainer].result()[case.label]

    yield get
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """weightgen's model for a case, with the trainer's recipe, in float32, loaded."""
    root = tmp_path_factory.mktemp("written")
    cache: dict[str, dict[str, np.ndarray]] = {}

    def get(case: Case) -> dict[str, np.ndarray]:
        key = f"{case.trainer}-{case.label}"
        if key not in cache:
            folder = root / key
            recipe = TRAINERS[case.trainer].recipe
            mup = {"mup_base_width": case.sizes["mup_base"]} if "mup_base" in case.sizes else {}
            weightgen.write_model(case.config, folder, init=recipe, dtype="float32", seed=1, **mup)
            cache[key] = weightgen.load(folder)
        return cache[key]

    return get


# --- Statistics, and comparing two samples ------------------------------------------------


def stats(values: np.ndarray) -> dict:
    """As tests/trainers/oracle.py computes them for the trainers' tensors."""
    x = values.astype(np.float64)
    rows = 0
    if x.ndim >= 2 and x.size:
        rows = int((x.reshape(-1, x.shape[-1]) == 0).all(axis=1).sum())
    return {
        "numel": int(x.size),
        "mean": float(x.mean()) if x.size else 0.0,
        "std": float(x.std()) if x.size else 0.0,
        "maxabs": float(np.abs(x).max()) if x.size else 0.0,
        "all_zeros": bool((x == 0).all()),
        "all_ones": bool((x == 1).all()),
        "zero_rows": rows,
    }


def pooled(parts: list[dict]) -> dict:
    """The statistics of several tensors' values taken together."""
    n = sum(p["numel"] for p in parts)
    mean = sum(p["mean"] * p["numel"] for p in parts) / n
    square = sum((p["std"] ** 2 + p["mean"] ** 2) * p["numel"] for p in parts) / n
    return {
        "numel": n,
        "mean": mean,
        "std": math.sqrt(max(square - mean**2, 0.0)),
        "maxabs": max(p["maxabs"] for p in parts),
        "all_zeros": all(p["all_zeros"] for p in parts),
        "all_ones": all(p["all_ones"] for p in parts),
        "zero_rows": sum(p["zero_rows"] for p in parts),
    }


def _std_error(std: float, n: int) -> float:
    """The standard error of a sample std of n normal values: std * sqrt((kurtosis - 1) /
    (4 n)), kurtosis 3 (a truncated normal's is lower: this errs wide)."""
    return std * math.sqrt(2 / (4 * n))


def _truncated_std(cut: float) -> float:
    """The std of a standard normal cut at ±cut."""
    from scipy.stats import truncnorm

    return float(truncnorm.std(-cut, cut))


Z = 5.0  # standard errors: one false alarm in ~1.7 million comparisons


def compare(key: str, theirs: dict, ours: dict, cut: float | None) -> list[str]:
    """What differs between the trainer's tensor (or pool) and weightgen's, as lines."""
    if theirs["numel"] != ours["numel"]:
        return [f"{key}: {ours['numel']} values, the trainer has {theirs['numel']}"]
    if theirs["all_zeros"] or ours["all_zeros"]:
        same = theirs["all_zeros"] == ours["all_zeros"]
        return [] if same else [f"{key}: all zeros on one side only ({_describe(theirs, ours)})"]
    if theirs["all_ones"] or ours["all_ones"]:
        same = theirs["all_ones"] == ours["all_ones"]
        return [] if same else [f"{key}: all ones on one side only ({_describe(theirs, ours)})"]
    problems = []
    n1, n2 = theirs["numel"], ours["numel"]
    s = max(theirs["std"], ours["std"])
    tolerance = Z * math.hypot(_std_error(s, n1), _std_error(s, n2))
    if abs(theirs["std"] - ours["std"]) > tolerance:
        problems.append(f"{key}: std off by more than {tolerance:.3g} ({_describe(theirs, ours)})")
    if abs(theirs["mean"] - ours["mean"]) > Z * s * math.sqrt(1 / n1 + 1 / n2):
        problems.append(f"{key}: mean off ({_describe(theirs, ours)})")
    if theirs["zero_rows"] or ours["zero_rows"]:
        problems.append(
            f"{key}: all-zero rows: the trainer {theirs['zero_rows']}, weightgen "
            f"{ours['zero_rows']}"
        )
    if cut is not None:
        # The trainer's untruncated std, from its measured one (high side of its error).
        bound = cut * (theirs["std"] + Z * _std_error(s, n1)) / _truncated_std(cut)
        for side, values in (("the trainer", theirs), ("weightgen", ours)):
            if values["maxabs"] > bound:
                problems.append(
                    f"{key}: {side}'s max |x| {values['maxabs']:.4g} beyond the ±{cut} std "
                    f"cut {bound:.4g}"
                )
    return problems


def _describe(theirs: dict, ours: dict) -> str:
    def one(s: dict) -> str:
        return f"std {s['std']:.5g} mean {s['mean']:.3g} max|x| {s['maxabs']:.4g}"

    return f"trainer {one(theirs)}; weightgen {one(ours)}"


# --- Pairing the two sides ----------------------------------------------------------------


def _covers(group_role: str, role: str) -> int | None:
    """How specifically a trainer's role names a weightgen role (None: it does not): the same
    base role, and every qualifier it gives among the weightgen role's (a trainer's fused
    "mlp_in" covers weightgen's "mlp_in.gate" and "mlp_in.up"; "mlp_in.shared" covers
    "mlp_in.gate.shared")."""
    group_base, *group_quals = group_role.split(".")
    base, *quals = role.split(".")
    if group_base != base or not set(group_quals) <= set(quals):
        return None
    return len(group_quals)


def pairs(case: Case, report: dict, ours: dict[str, np.ndarray]):
    """(key, the trainer's stats, weightgen's stats) for every tensor or pool, and the lines
    for whatever has no counterpart."""
    theirs = report["tensors"]
    if case.trainer == "torchtitan":
        problems = [f"{n}: only the trainer has it" for n in sorted(set(theirs) - set(ours))]
        problems += [f"{n}: only weightgen has it" for n in sorted(set(ours) - set(theirs))]
        both = sorted(set(theirs) & set(ours))
        return [(n, theirs[n], stats(ours[n])) for n in both], problems

    table, layer_of = ROLE_TABLES[case.trainer], re.compile(LAYER[case.trainer])
    groups: dict[str, list[dict]] = {}
    problems = []
    for name, values in theirs.items():
        role = next((r for pattern, r in table if re.search(pattern, name)), None)
        if role is None:
            problems.append(f"{name}: the trainer's parameter has no role in the test's table")
            continue
        found = layer_of.search(name)
        groups.setdefault(f"{role}@{found.group(1) if found else '-'}", []).append(values)
    ours_groups: dict[str, list[dict]] = {}
    for t in hf.model_of(case.config).tensors:
        layer = "-" if t.layer is None else str(t.layer)
        candidates = [
            (_covers(key.split("@")[0], t.decl.role), key)
            for key in groups
            if key.endswith(f"@{layer}")
        ]
        candidates = [(rank, key) for rank, key in candidates if rank is not None]
        if not candidates:
            if not t.decl.role.startswith("special"):  # a family's own: no trainer has it
                problems.append(f"{t.name} ({t.decl.role}): no trainer parameter has its role")
            continue
        ours_groups.setdefault(max(candidates)[1], []).append(stats(ours[t.name]))
    compared = []
    for key in sorted(groups):
        if key not in ours_groups:
            problems.append(f"{key}: weightgen has no tensor of this role in this layer")
            continue
        compared.append((key, pooled(groups[key]), pooled(ours_groups[key])))
    return compared, problems


@pytest.fixture
def case_data(request, oracles, written):
    case = CASES[request.param]
    _installed(TRAINERS[case.trainer])
    _family_present(case)
    report = oracles(case)
    assert report["ok"], report.get("error")
    return case, *pairs(case, report, written(case))


# --- The tests ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("case_data", sorted(CASES), indirect=True)
def test_every_tensor_matches_the_trainers_own_init(case_data):
    case, compared, problems = case_data
    for key, theirs, ours in compared:
        problems += compare(key, theirs, ours, truncated_at(case, key))
    recipe = TRAINERS[case.trainer].recipe
    assert not problems, f"--init {recipe} against {TRAINERS[case.trainer].name}:\n" + "\n".join(
        problems
    )


def _by_layer(compared: list) -> dict[str, dict[int, tuple[dict, dict]]]:
    """Tensors (or pools) that exist in several layers, neither zeros nor ones: pattern
    ("model.layers.{l}.self_attn.o_proj.weight", "attn_out@{l}") -> layer -> both sides."""
    found: dict[str, dict[int, tuple[dict, dict]]] = {}
    for key, theirs, ours in compared:
        match = re.search(r"(?<=layers\.)(\d+)(?=\.)|(?<=@)(\d+)$", key)
        constant = [s["all_zeros"] or s["all_ones"] for s in (theirs, ours)]
        if match and not any(constant):  # (one side constant: a failure of the test above)
            pattern = key[: match.start()] + "{l}" + key[match.end() :]
            found.setdefault(pattern, {})[int(match.group())] = (theirs, ours)
    return found


def _ratio(first: dict, last: dict) -> tuple[float, float]:
    """std(first) / std(last), and its standard error."""
    r = first["std"] / last["std"]
    relative = math.hypot(
        _std_error(1, first["numel"]),
        _std_error(1, last["numel"]),
    )
    return r, r * relative


@pytest.mark.slow
@pytest.mark.parametrize("case_data", sorted(CASES), indirect=True)
def test_depth_scaling_is_the_trainers(case_data):
    """Per tensor (or role) present in several layers: std in the first layer over std in
    the last, on both sides alike; and which of them change with depth at all."""
    _, compared, _ = case_data
    problems, scaled = [], {"trainer": set(), "weightgen": set()}
    for pattern, layers in _by_layer(compared).items():
        first, last = min(layers), max(layers)
        if first == last:
            continue
        (t0, w0), (t1, w1) = layers[first], layers[last]
        rt, et = _ratio(t0, t1)
        rw, ew = _ratio(w0, w1)
        if abs(rt - rw) > Z * math.hypot(et, ew):
            problems.append(
                f"{pattern}: std layer {first} / layer {last} is {rw:.4g} in weightgen, "
                f"{rt:.4g} in the trainer"
            )
        for side, (r, e) in (("trainer", (rt, et)), ("weightgen", (rw, ew))):
            if abs(r - 1) > Z * e and e < 0.05:  # a visible change (enough values to see it)
                scaled[side].add(pattern)
    assert not problems, "\n".join(problems)
    assert scaled["trainer"] == scaled["weightgen"]


@pytest.mark.slow
def test_torchtitan_llama3_depth_init_is_visible(oracles, written):
    """The depth check can see depth init: torchtitan's own llama3 o_proj, up_proj and
    down_proj have std 0.02 / sqrt(2 (l + 1)), so layer 0 over layer 3 is sqrt(4) = 2
    (models/llama3/__init__.py _depth_init); the gate and q/k/v do not change."""
    case = CASES["torchtitan-llama3-untied"]
    _installed(TRAINERS["torchtitan"])
    report = oracles(case)
    assert report["ok"], report.get("error")
    compared, _ = pairs(case, report, written(case))
    layers = _by_layer(compared)
    for proj, want in [
        ("self_attn.o_proj", 2.0),
        ("mlp.up_proj", 2.0),
        ("mlp.down_proj", 2.0),
        ("self_attn.q_proj", 1.0),
        ("mlp.gate_proj", 1.0),
    ]:
        both = layers[f"model.layers.{{l}}.{proj}.weight"]
        for side, label in ((0, "torchtitan"), (1, "weightgen")):
            r, e = _ratio(both[0][side], both[L - 1][side])
            assert abs(r - want) <= Z * e, f"{label}'s {proj}: layer 0 / layer 3 std {r:.4g}"


@pytest.mark.slow
@pytest.mark.parametrize(("mup", "plain", "m"), [("qwen3-mup64", "qwen3", 4.0)])
def test_megatron_mup_width_scaling_is_visible(oracles, written, mup, plain, m):
    """The comparison can see μP: in megatron-core itself and in weightgen alike, m = 256 /
    64 = 4 halves the std of every hidden weight (init_method σ/sqrt(m),
    output_layer_init_method σ/(sqrt(2L) sqrt(m))) and leaves the embedding and the untied
    output layer at σ (transformer_config.py __post_init__, gpt_model.py)."""
    _installed(TRAINERS["megatron"])
    sides = {}
    for label in (mup, plain):
        case = CASES[f"megatron-{label}"]
        report = oracles(case)
        assert report["ok"], report.get("error")
        compared, _ = pairs(case, report, written(case))
        sides[label] = {key: (theirs, ours) for key, theirs, ours in compared}
    want = {"attn_in@0": math.sqrt(m), "mlp_out@3": math.sqrt(m), "embedding@-": 1.0}
    want["head@-"] = 1.0
    for key, ratio in want.items():
        for side, who in ((0, "megatron-core"), (1, "weightgen")):
            r, e = _ratio(sides[plain][key][side], sides[mup][key][side])
            assert abs(r - ratio) <= Z * e, f"{who}'s {key}: std without / with μP {r:.4g}"
