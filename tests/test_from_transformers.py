"""Any model type transformers knows (``weightgen hf --from-transformers``), and hub ids.

weightgen runs with each transformers in a process of its own (from_transformers_client.py:
the newest 5.x, and 4.57.6 first on PYTHONPATH); what it writes is loaded by the real client
(hf_client.py) in both versions. Types weightgen does not build in (tests/data/hf_transformers)
are written, loaded with no missing or unexpected keys, and held to transformers' own init:
dense ones (opt, gpt_neox), MoE with experts fused in memory in 5.x (olmoe; deepseek_v2, whose
router 5.x keeps in float32), padding rows (opt, olmoe), parameters made on the CPU whatever
the device (diffllama), constants computed from constants (apertus), a truncated normal cut at
±2σ and a masked-LM head (modernbert), and mamba, whose init no jax initializer expresses
(--rule). Every built-in family (tests/data/hf_tiny) must come out of
transformers exactly as weightgen declares it; a manifest replays where torch cannot be
imported. Hub ids read a cache laid out on disk as huggingface_hub lays it out.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TRANSFORMERS_ENV, run_client

import weightgen
from weightgen.hf import hub, torch_init

HERE = Path(__file__).parent
ROOT = HERE.parent
TRANSFORMERS4 = ROOT / ".venv" / "transformers4"  # make install-test puts 4.57.6 here
TIMEOUT = 600
TINY = {
    p.stem: json.loads(p.read_text()) for p in sorted((HERE / "data" / "hf_tiny").glob("*.json"))
}
EXTRA = {
    p.stem: json.loads(p.read_text())
    for p in sorted((HERE / "data" / "hf_transformers").glob("*.json"))
}
# mamba's A_log (a log of 1..N) and dt_proj's bias (an inverse softplus of random values)
# are computed: no jax initializer draws them, so the user says what they get. Its conv1d
# and out_proj (kaiming_uniform_) and dt_proj's weight (uniform_(-b, b)) are uniform variance
# scalings.
MAMBA = "mamba"
MAMBA_RULES = ["*.mixer.A_log=zeros", "*.mixer.dt_proj.bias=zeros"]
RULED = ("A_log", "dt_proj.bias")
EXPRESSED = [label for label in EXTRA if label != MAMBA]
VERSIONS = ("5", "4")


def _rules(label: str) -> list[str]:
    return MAMBA_RULES if label == MAMBA else []


def _run(script: str, jobs: list[dict], tmp: Path, version: str) -> dict:
    jobs_file = tmp / f"{Path(script).stem}-{version}-{len(jobs)}.json"
    python_path = None
    if version == "4":
        if not TRANSFORMERS4.is_dir():
            pytest.fail(f"transformers 4.57.6 is not in {TRANSFORMERS4}: run make install-test")
        python_path = str(TRANSFORMERS4)
    answer = run_client(HERE / script, jobs, jobs_file, python_path, **TRANSFORMERS_ENV)
    assert answer["version"].startswith(version), answer["version"]
    return answer


def _write_jobs(folders: dict[str, Path]) -> list[dict]:
    return [
        {
            "kind": "write",
            "config": EXTRA[label],
            "folder": str(folder),
            "dtype": "float32",
            "rules": _rules(label),
        }
        for label, folder in folders.items()
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """weightgen --from-transformers with 5.x (every built-in family's tiny config, the extra
    types: specs and folders, the CLI) and with 4.57.6 (the extra types: specs and folders);
    then each transformers on the folders written with it, and 4.57.6 on 5.x's too."""
    tmp = tmp_path_factory.mktemp("from-transformers")
    folders = {v: {label: tmp / f"{label}-{v}" for label in EXTRA} for v in VERSIONS}
    configs = {}
    for label, config in EXTRA.items():
        configs[label] = tmp / f"{label}.json"
        configs[label].write_text(json.dumps(config))
    jobs5 = [{"kind": "spec", "config": c, "dtype": "bfloat16"} for c in TINY.values()]
    jobs5 += [
        {"kind": "spec", "config": c, "dtype": "bfloat16", "rules": _rules(label)}
        for label, c in EXTRA.items()
    ]
    jobs5 += _write_jobs(folders["5"])
    cli = {
        "opt": ["hf", str(configs["opt"]), "-o", str(tmp / "cli-opt"), "--from-transformers"],
        "mamba": ["hf", str(configs[MAMBA]), "-o", str(tmp / "cli-mamba"), "--from-transformers"],
        "rules": [
            "hf",
            str(configs[MAMBA]),
            "--spec",
            "--from-transformers",
            "--rule",
            MAMBA_RULES[0],
        ],
    }
    jobs5 += [{"kind": "cli", "args": args} for args in cli.values()]
    found = iter(_run("from_transformers_client.py", jobs5, tmp, "5")["reports"])
    result = {
        "tmp": tmp,
        "folders": folders,
        "builtin": {label: next(found) for label in TINY},
        "specs": {"5": {label: next(found) for label in EXTRA}},
        "written": {"5": {label: next(found) for label in EXTRA}},
        "cli": {name: next(found) for name in cli},
    }
    jobs4 = [{"kind": "spec", "config": EXTRA[label], "dtype": "bfloat16"} for label in EXPRESSED]
    jobs4 += _write_jobs(folders["4"])
    found = iter(_run("from_transformers_client.py", jobs4, tmp, "4")["reports"])
    result["specs"]["4"] = {label: next(found) for label in EXPRESSED}
    result["written"]["4"] = {label: next(found) for label in EXTRA}
    for version, reports in result["written"].items():
        for label, report in reports.items():
            assert report["ok"], (version, label, report.get("error"))
    result["load"], result["init"] = {}, {}
    for reader in VERSIONS:
        writers = VERSIONS if reader == "4" else ("5",)  # 4.57.6 reads 5.x's folders too
        pairs = [(w, label) for w in writers for label in EXTRA]
        jobs = [{"kind": "load", "folder": str(folders[w][label])} for w, label in pairs]
        own = folders[reader]
        jobs += [
            {"kind": "init", "config": json.loads((own[label] / "config.json").read_text())}
            for label in EXTRA
        ]
        found = iter(_run("hf_client.py", jobs, tmp, reader)["reports"])
        for pair in pairs:
            result["load"][(*pair, reader)] = next(found)
        result["init"][reader] = {label: next(found) for label in EXTRA}
    return result


LOADS = [("5", "5"), ("4", "4"), ("5", "4")]  # (written with, loaded by)


# --- every built-in family, read from transformers ----------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("label", sorted(TINY))
def test_transformers_gives_every_builtin_family_as_weightgen_declares_it(world, label):
    """Names, shapes, dtypes (bfloat16, where some families keep float32 tensors) and each
    tensor's entry (initializer, parameters, zero_rows): the same from transformers 5.x's own
    model and init as from weightgen's declaration of the family."""
    report = world["builtin"][label]
    assert report["ok"], report.get("error")
    theirs = report["spec"]
    ours = weightgen.model_spec(TINY[label], dtype="bfloat16")
    assert theirs["hf_config"]["architectures"] == ours["hf_config"]["architectures"]
    assert (theirs["dtype"], theirs["sample_dtype"]) == (ours["dtype"], ours["sample_dtype"])
    differ = {
        name: (ours["tensors"].get(name), theirs["tensors"].get(name))
        for name in set(ours["tensors"]) | set(theirs["tensors"])
        if ours["tensors"].get(name) != theirs["tensors"].get(name)
    }
    assert not differ, sorted(differ.items())[:5]


# --- types weightgen does not build in ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("writer", "reader"), LOADS)
@pytest.mark.parametrize("label", sorted(EXTRA))
def test_written_folder_loads_cleanly(world, writer, reader, label):
    report = world["load"][(writer, label, reader)]
    assert report["ok"], report.get("error")
    assert report["missing"] == [] and report["unexpected"] == []
    assert report["mismatched"] == [] and report["errors"] == []
    assert report["dtype"] == "float32" and report["finite"]


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("label", sorted(EXTRA))
def test_values_follow_transformers_init(world, version, label):
    """Each tensor of a folder written with a transformers version against the same tensor
    of that version's own init of the written config: zeros, ones and constants exact, the
    std within sampling error, the same zero rows. mamba's tensors set by --rule are not
    transformers'. (The versions differ: 4.57.6 computes apertus' constants in bfloat16.)"""
    theirs = dict(world["init"][version][label])
    assert theirs.pop("ok"), theirs.get("error")
    ours = weightgen.load(world["folders"][version][label])
    # The client reports parameters; save_pretrained writes persistent buffers too (apertus'
    # beta and eps), which transformers expects back (test_written_folder_loads_cleanly).
    assert set(theirs) <= set(ours)
    ruled = {n for n in ours if label == MAMBA and any(part in n for part in RULED)}
    for name in set(theirs) - ruled:
        _assert_follows(name, ours[name], theirs[name])


def _assert_follows(name: str, values: np.ndarray, want: dict) -> None:
    if want["zeros"]:
        assert not values.any(), name
        return
    if want["ones"]:
        assert (values == 1).all(), name
        return
    if want["constant"] is not None:
        assert (values == want["constant"]).all(), name
        return
    size = values.size
    tolerance = max(0.05, 4 / math.sqrt(size))  # both stds are draws: ~1/sqrt(n) apart
    assert math.isclose(values.std(), want["std"], rel_tol=tolerance), (name, values.std())
    # Both means are draws: their difference has std sigma * sqrt(2 / n).
    assert abs(values.mean() - want["mean"]) <= 5 * want["std"] * math.sqrt(2 / size), name
    if values.ndim == 2:
        assert np.flatnonzero(~values.any(axis=1)).tolist() == want["zero_rows"], name


@pytest.mark.slow
def test_the_extra_types_show_what_they_are_meant_to(world):
    """The cases these configs stand for: olmoe's experts fused in memory in 5.x and saved
    one tensor per expert; opt's and olmoe's padding rows; opt's tie; a float32 folder."""
    specs = {label: r["spec"] for label, r in world["specs"]["5"].items()}
    olmoe = specs["olmoe"]["tensors"]
    experts = [n for n in olmoe if ".mlp.experts." in n]
    assert len(experts) == 2 * 4 * 3  # layers x experts x (gate, up, down)
    assert olmoe["model.layers.0.mlp.experts.3.up_proj.weight"]["shape"] == [64, 128]
    assert olmoe["model.embed_tokens.weight"]["zero_rows"] == [1]
    router = specs["deepseek_v2"]["tensors"]["model.layers.1.mlp.gate.weight"]
    assert (router["dtype"], router["sample_dtype"]) == ("float32", "float32")  # fp32-kept
    assert "model.layers.1.mlp.experts.3.down_proj.weight" in specs["deepseek_v2"]["tensors"]
    gate = specs["apertus"]["tensors"]["model.layers.0.mlp.act_fn.beta"]
    assert gate == {"shape": [], "init": "constant", "value": 0.5}
    wo = specs["modernbert"]["tensors"]["model.layers.2.mlp.Wo.weight"]
    assert (wo["init"], wo["lower"], wo["upper"]) == ("truncated-normal", -2.0, 2.0)
    assert specs["modernbert"]["hf_config"]["architectures"] == ["ModernBertForMaskedLM"]
    lam = specs["diffllama"]["tensors"]["model.layers.1.self_attn.lambda_k2"]
    assert lam == {"shape": [32], "init": "normal", "stddev": 0.1}  # made on the CPU
    opt = specs["opt"]["tensors"]
    assert opt["model.decoder.embed_tokens.weight"]["zero_rows"] == [1]
    assert "lm_head.weight" not in opt  # tied to the embedding: written once
    assert specs["gpt_neox"]["tensors"]["embed_out.weight"]["init"] == "normal"
    for label, spec in specs.items():
        assert spec["recipe"]["name"].startswith("transformers 5."), label
        assert spec["recipe"]["rules"] == _rules(label)


@pytest.mark.slow
@pytest.mark.parametrize("label", EXPRESSED)
def test_transformers4_reads_the_same_layout(world, label):
    """With 4.57.6 installed instead (no weight conversion there), the same tensors and
    entries; only the record names the version, and 4.x keeps no deepseek_v2 router in
    float32."""
    report = world["specs"]["4"][label]
    assert report["ok"], report.get("error")
    four, five = report["spec"], world["specs"]["5"][label]["spec"]
    assert four["recipe"]["name"].startswith("transformers 4.57.")

    def entries(spec: dict) -> dict:
        drop = ("dtype", "sample_dtype")
        return {n: {k: v for k, v in t.items() if k not in drop} for n, t in spec.items()}

    assert entries(four["tensors"]) == entries(five["tensors"])


@pytest.mark.slow
def test_the_cli_says_transformers_supplied_the_layout(world):
    report = world["cli"]["opt"]
    assert report["ok"] and report["code"] == 0, report
    assert "layout and init read from transformers 5." in report["stderr"]
    assert (world["tmp"] / "cli-opt" / "model.safetensors").is_file()


@pytest.mark.slow
def test_an_init_no_jax_initializer_expresses_names_the_tensor_and_the_call(world):
    report = world["cli"][MAMBA]
    assert report["ok"] and report["code"] == 2, report
    error = report["stderr"].strip()
    assert error.count("\n") == 0 and "Traceback" not in error
    assert "'backbone.layers.0.mixer.A_log'" in error and "copy_ of log(" in error
    assert "--rule 'backbone.layers.0.mixer.A_log=INIT" in error
    assert not (world["tmp"] / "cli-mamba").exists()
    # A rule covers A_log; the next tensor no rule covers is named.
    partial = world["cli"]["rules"]
    assert partial["code"] == 2 and "'backbone.layers.0.mixer.dt_proj.bias'" in partial["stderr"]
    assert "copy_ of add(" in partial["stderr"]
    ruled = world["specs"]["5"][MAMBA]["spec"]["tensors"]
    assert ruled["backbone.layers.0.mixer.A_log"] == {"shape": [128, 8], "init": "zeros"}
    # kaiming_uniform_(a=sqrt(5)) on conv1d [128, 1, 4]: torch's fan_in is 1 x 4 (the kernel)
    conv = ruled["backbone.layers.1.mixer.conv1d.weight"]
    assert (conv["init"], conv["distribution"], conv["scale"]) == (
        "variance-scaling",
        "uniform",
        pytest.approx(1 / 3),
    )
    assert (conv["in_axis"], conv["out_axis"]) == (1, 0)
    # uniform_(-dt_rank**-0.5, dt_rank**-0.5) on dt_proj [128, 4]: scale b² fan_in / 3
    dt = ruled["backbone.layers.1.mixer.dt_proj.weight"]
    assert dt["scale"] == pytest.approx(0.5**2 * 4 / 3) and dt["mode"] == "fan_in"


@pytest.mark.slow
def test_a_manifest_replays_without_torch_or_transformers(world, tmp_path):
    """The manifest records every tensor's entry: replaying it needs neither (they cannot
    even be imported here) and gives the same bytes."""
    folder = world["folders"]["5"]["olmoe"]
    again = tmp_path / "again"
    script = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'huggingface_hub'):\n"
        "    sys.modules[name] = None\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from weightgen.cli import main\n"
        f"main(['run', {str(folder / 'weightgen.manifest.json')!r}, '-o', {str(again)!r}, '-q'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("config.json", "model.safetensors"):
        assert (again / name).read_bytes() == (folder / name).read_bytes(), name


# --- without transformers: refusals and messages ------------------------------------------


def test_an_unknown_type_suggests_the_flag(tmp_path, run_cli):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(EXTRA["opt"]))
    result = run_cli("hf", str(config), "-o", str(tmp_path / "out"))
    assert result.code == 2 and result.stderr.count("\n") == 1
    assert "'opt' is not supported; weightgen knows bert" in result.stderr
    assert "add --from-transformers (needs torch and transformers)" in result.stderr


def test_the_flag_without_torch_says_what_to_install(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(EXTRA["opt"]))
    script = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from weightgen.cli import main\n"
        f"main(['hf', {str(config)!r}, '-o', {str(tmp_path / 'out')!r}, '--from-transformers'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "--from-transformers needs torch and transformers" in proc.stderr
    # What to run, in words that work from a clone (weightgen is not installed by name).
    assert "pip install torch transformers" in proc.stderr
    assert ".venv/bin/pip install -c constraints.txt -e '.[transformers]'" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_transformers_too_old_is_named_with_what_to_install(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(EXTRA["opt"]))
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import transformers\n"
        "transformers.__version__ = '4.46.3'\n"
        "from weightgen.cli import main\n"
        f"main(['hf', {str(config)!r}, '--spec', '--from-transformers'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=TIMEOUT
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "needs transformers 4.57 or later" in proc.stderr
    assert "4.46.3 is installed" in proc.stderr


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--init", "megatron"], "--init megatron: with --from-transformers only hf"),
        (["--head", "causal-lm"], "--head causal-lm: --head picks among a built-in family's"),
        (["--init-std", "0.01"], "--init-std: with --from-transformers each std is the one"),
    ],
)
def test_what_only_builtin_families_have_is_refused(tmp_path, run_cli, options, fragment):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(EXTRA["opt"]))
    result = run_cli("hf", str(config), "--spec", "--from-transformers", *options)
    assert result.code == 2 and fragment in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"num_hidden_layers": 2000, "num_experts": 1000}, r"\(2000 layers of 1000 experts"),
        ({"num_hidden_layers": 10**9}, "num_hidden_layers 1000000000 is not a sane layer"),
        ({"encoder_layers": 10**6}, "encoder_layers 1000000 is not a sane"),
        ({"vision_config": {"num_hidden_layers": 10**7}}, "num_hidden_layers 10000000 is not"),
        ({"text_config": {"decoder_layers": 500, "moe_num_experts": 300}}, "500 layers of 300"),
        # no one part is too big, but together they are
        ({"sub": [{"n_layer": 60_000}, {"n_layer": 60_000}]}, "more than 100,000 tensors"),
    ],
)
def test_configs_that_would_build_forever_are_refused_before_transformers(change, fragment):
    """Sizes cost nothing on the meta device; counts of modules do."""
    with pytest.raises(weightgen.UsageError, match=fragment):
        weightgen.model_spec({**EXTRA["olmoe"], **change}, from_transformers=True)


def test_written_config_fills_class_defaults_into_nested_configs_too():
    from weightgen.hf.from_transformers import _filled

    given = {"model_type": "x", "text_config": {"hidden_size": 64}, "tie": True}
    defaults = {"tie": False, "vocab_size": 10, "text_config": {"hidden_size": 8, "eps": 1e-6}}
    assert _filled(given, defaults) == {
        "model_type": "x",
        "text_config": {"hidden_size": 64, "eps": 1e-6},
        "tie": True,
        "vocab_size": 10,
    }
    assert given["text_config"] == {"hidden_size": 64}  # the caller's config is left alone


# --- the rules for torch's init calls (pure: no torch) ---------------------------------

W = torch_init.Write


def _strides(shape):
    return tuple(math.prod(shape[i + 1 :]) for i in range(len(shape)))


def _rows(shape, first, count, effect, call="zero_()"):
    """A write to rows [first, first + count) of a contiguous tensor of ``shape``."""
    view = (count, *shape[1:])
    return W(first * math.prod(shape[1:]), view, _strides(view), effect, call)


def _all(shape, effect, call="init"):
    return W(0, shape, _strides(shape), effect, call)


def _held(writes, shape=(8, 4)):
    return torch_init.finish(*torch_init.fold(writes, 0, shape))


def test_the_last_write_decides_and_a_zeroed_pad_row_is_zero_rows():
    normal = torch_init.normal(0.0, 0.02)
    empty = torch_init.EMPTY
    assert _held(
        [_all((8, 4), empty), _all((8, 4), normal), _rows((8, 4), 3, 1, {"init": "zeros"})]
    ) == (
        {"init": "normal", "stddev": 0.02, "zero_rows": [3]},
        None,
    )
    # zeroed first, drawn after: the draw covers the row (torch's Embedding, then _init_weights)
    later = [_all((8, 4), normal), _rows((8, 4), 3, 1, {"init": "zeros"}), _all((8, 4), normal)]
    assert _held(later) == ({"init": "normal", "stddev": 0.02}, None)
    assert _held([_all((8, 4), empty)]) == (None, empty)
    assert _held([]) == (None, torch_init.NOTHING)


def test_a_partial_write_other_than_rows_of_zeros_is_a_problem_naming_the_call():
    normal = torch_init.normal(0.0, 0.02)
    rows = _rows((8, 4), 2, 2, torch_init.constant(0.5), "fill_(0.5)")
    entry, problem = _held([_all((8, 4), normal), rows])
    assert entry is None and problem.startswith("fill_(0.5) on rows 2..3 only")
    column = W(1, (8,), (4,), {"init": "zeros"}, "zero_()")  # weight[:, 1].zero_()
    entry, problem = _held([_all((8, 4), normal), column])
    assert entry is None and "zero_() on part of the tensor only" in problem
    other = W(32, (8, 4), (4, 1), {"init": "ones"}, "ones_()")  # another tensor's storage
    assert _held([_all((8, 4), normal), other]) == ({"init": "normal", "stddev": 0.02}, None)


@pytest.mark.parametrize(
    ("effect", "expected"),
    [
        (torch_init.normal(0, 0.5), {"init": "normal", "stddev": 0.5}),
        (torch_init.normal(1.0, 0.5), "normal_(mean=1.0, std=0.5) (weightgen's normal has mean 0)"),
        (torch_init.uniform(0, 0.3), {"init": "uniform", "scale": 0.3}),
        (torch_init.uniform(-0.3, 0.3), "uniform_(a=-0.3, b=0.3) (JAX's uniform draws from"),
        (torch_init.uniform(-0.3, 0.3, (2,)), "uniform_(a=-0.3, b=0.3) (JAX's uniform draws"),
        (
            torch_init.uniform(-0.3, 0.3, (8, 4)),
            {
                "init": "variance-scaling",
                "scale": 0.3 * 0.3 * 4 / 3,
                "mode": "fan_in",
                "distribution": "uniform",
                "in_axis": 1,
                "out_axis": 0,
            },
        ),
        (torch_init.constant(0.0), {"init": "zeros"}),
        (torch_init.constant(1), {"init": "ones"}),
        (torch_init.constant(-1e-6), {"init": "constant", "value": -1e-6}),
        (torch_init.constant(float("nan")), "fills it with nan"),
        # torch's bounds are absolute, JAX's in stds; beyond 5 stds on both sides no cut
        (
            torch_init.trunc_normal(0, 0.02, -0.04, 0.04),
            {"init": "truncated-normal", "stddev": 0.02, "lower": -2.0, "upper": 2.0},
        ),
        (torch_init.trunc_normal(0, 0.02, -2.0, 2.0), {"init": "normal", "stddev": 0.02}),
        (torch_init.orthogonal(2.0, 2), {"init": "orthogonal", "scale": 2.0, "column_axis": 0}),
        (torch_init.orthogonal(1.0, 1), "orthogonal_(gain=1.0) on a tensor of fewer than 2"),
    ],
)
def test_each_call_maps_to_one_jax_initializer_or_says_why_not(effect, expected):
    entry, problem = _held([_all((8, 4), effect)])
    if isinstance(expected, dict):
        assert (entry, problem) == (expected, None)
    else:
        assert entry is None and problem.startswith(expected)


@pytest.mark.parametrize(
    ("entry", "shape", "bound"),
    [
        # uniform_(-0.3, 0.3) on a conv weight [out, in, kernel]: fan_in = in * kernel
        (torch_init.uniform(-0.3, 0.3, (64, 6, 5)), (64, 6, 5), 0.3),
        # kaiming_uniform_(a=sqrt(5)), nn.Linear's default: bound 1 / sqrt(fan_in)
        (torch_init.variance_scaling(1 / 3, "fan_in"), (96, 40), 1 / math.sqrt(40)),
        # xavier_uniform_(gain=2): bound 2 sqrt(6 / (fan_in + fan_out)), fans times kernel 3
        (torch_init.variance_scaling(4.0, "fan_avg"), (30, 20, 3), 2 * math.sqrt(6 / 150)),
    ],
)
def test_a_symmetric_uniform_is_a_uniform_variance_scaling_with_torch_bounds(entry, shape, bound):
    """What the entry draws fills torch's [-bound, bound): its extremes near the bound, its
    std bound / sqrt(3)."""
    from conftest import generated

    spec = weightgen.make_tensor(entry["init"], shape, params=_params(entry), seed=7)
    values = generated(spec).astype(np.float64)
    assert bound * 0.98 < np.abs(values).max() <= bound * (1 + 1e-6)
    assert math.isclose(values.std(), bound / math.sqrt(3), rel_tol=0.05)


def _params(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "init"}


def test_the_log_of_a_uniform_is_the_log_transform():
    """qwen3_next's A_log: ``uniform_(0.01, 16).log_()`` is ``log(uniform(15.99) + 0.01)``."""
    log = torch_init.Map("log", "log_()")
    drawn = _all((8, 4), torch_init.uniform(0.01, 16))
    assert _held([drawn, _all((8, 4), log)]) == (
        {"init": "uniform", "scale": 15.99, "transform": {"name": "log", "offset": 0.01}},
        None,
    )
    entry, problem = _held([_all((8, 4), torch_init.normal(0, 1)), _all((8, 4), log)])
    assert entry is None and problem.startswith("log_() of init=normal")


# --- hub ids -----------------------------------------------------------------------------

REPO = "acme/tiny-llama"
MAIN = "a" * 40
V1 = "b" * 40


def _cache(root: Path, repo: str = REPO) -> Path:
    """A cache as huggingface_hub lays it out: blobs, snapshots/<commit>/config.json linking
    to a blob, refs/<name> holding the commit (no newline)."""
    folder = root / f"models--{repo.replace('/', '--')}"
    versions = {MAIN: TINY["llama"], V1: {**TINY["llama"], "hidden_size": 64}}
    for commit, config in versions.items():
        blob = folder / "blobs" / f"blob-{commit[:8]}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_text(json.dumps(config))
        snapshot = folder / "snapshots" / commit
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").symlink_to(os.path.relpath(blob, snapshot))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(MAIN)
    (folder / "refs" / "v1").write_text(V1)
    return folder


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    for variable in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    _cache(tmp_path / "hub")
    return tmp_path / "hub"


def _hidden(spec: dict) -> int:
    return spec["tensors"]["model.embed_tokens.weight"]["shape"][1]


def test_a_hub_id_reads_the_cached_main(hub_cache, run_cli):
    assert weightgen.model_spec(REPO) == weightgen.model_spec(TINY["llama"])
    result = run_cli("hf", REPO, "--spec")
    assert result.code == 0 and _hidden(json.loads(result.stdout)) == 128


@pytest.mark.parametrize("revision", ["v1", V1])
def test_a_revision_is_a_ref_name_or_a_commit(hub_cache, revision):
    assert _hidden(weightgen.model_spec(f"{REPO}@{revision}")) == 64


def test_hf_home_is_where_the_cache_is_when_hf_hub_cache_is_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    _cache(tmp_path / "home" / "hub")
    assert _hidden(weightgen.model_spec(REPO)) == 128


def test_a_repo_not_cached_offline_says_how_to_get_the_file(
    hub_cache, run_cli, tmp_path, monkeypatch
):
    result = run_cli("hf", "acme/other@v2", "-o", str(tmp_path / "out"))
    assert result.code == 1 and result.stderr.count("\n") == 1, result.stderr  # I/O: 1
    assert "acme/other@v2: no such file here, and its config.json is not in the" in result.stderr
    assert "HF_HUB_OFFLINE is set" in result.stderr
    assert "hf download acme/other config.json --revision v2" in result.stderr
    assert "or pass a path" in result.stderr
    assert not (tmp_path / "out").exists()
    unknown = run_cli("hf", f"{REPO}@v9", "--spec")  # a revision the cache does not know
    assert unknown.code == 1 and "not in the Hugging Face cache" in unknown.stderr
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")  # huggingface_hub reads this one too
    other = run_cli("hf", "acme/other", "--spec")
    assert other.code == 1 and "TRANSFORMERS_OFFLINE is set" in other.stderr, other.stderr


def test_an_existing_path_wins_over_a_hub_id(hub_cache, tmp_path):
    local = tmp_path / REPO
    local.mkdir(parents=True)
    (local / "config.json").write_text(json.dumps({**TINY["llama"], "hidden_size": 256}))
    assert _hidden(weightgen.model_spec(REPO)) == 256


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        (f"{REPO}@", "not a hub id (ORG/NAME or ORG/NAME@REVISION)"),
        (f"{REPO}@../../etc", "not a hub id"),
        ("acme/tiny--llama", "cannot read acme/tiny--llama"),
        ("acme/a/b", "cannot read acme/a/b"),
        ("configs/llama.json", "cannot read configs/llama.json"),  # a path, never looked up
    ],
)
def test_a_malformed_id_is_refused_in_one_line(hub_cache, run_cli, source, fragment):
    result = run_cli("hf", source, "--spec")
    assert result.code == 2 and fragment in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


def test_online_only_config_json_is_downloaded(hub_cache, monkeypatch, tmp_path):
    """With HF_HUB_OFFLINE unset, the one file comes through huggingface_hub into its cache
    (a stand-in here: the tests never reach the network)."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls = []
    fetched = tmp_path / "fetched.json"
    fetched.write_text(json.dumps(TINY["qwen3"]))

    def download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        return str(fetched)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(hub, "reach", lambda url: None)  # the Hub answers
    assert weightgen.model_spec("acme/qwen@dev")["hf_config"]["model_type"] == "qwen3"
    assert calls == [("acme/qwen", "config.json", {"revision": "dev", "cache_dir": str(hub_cache)})]
    assert hub.parse("acme/qwen") == hub.HubId("acme/qwen", "main")


# --- the Hub unreachable: said at once, in one whole line, exit 1 ---------------------------


class _Answering:
    """A local HTTP server standing in for the Hub: every request gets ``status``."""

    def __init__(self, status: int):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                self.send_response(status)
                self.end_headers()

            do_GET = do_HEAD

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: connecting is refused


def test_reach_tells_an_answer_from_no_network():
    server = _Answering(404)
    try:
        assert hub.reach(f"{server.url}/acme/x/resolve/main/config.json") is None
    finally:
        server.close()
    why = hub.reach(f"http://127.0.0.1:{_closed_port()}/acme/x/resolve/main/config.json")
    assert why is not None and "refused" in why.lower()


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        (None, "refused"),  # a closed local port: the connection is refused
        ("http://weightgen-test.invalid", ""),  # a name that never resolves (RFC 6761)
    ],
)
def test_an_unreachable_hub_is_said_at_once_with_the_io_exit_code(
    hub_cache, tmp_path, monkeypatch, endpoint, reason
):
    """Before: huggingface_hub retried for ~24 s, printing each retry, then one line cut
    mid-word, exit 2. Now: one HEAD of at most hub.PROBE_SECONDS, one whole line, exit 1."""
    import time

    pytest.importorskip("huggingface_hub")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "PYTHONPATH")}
    env["HF_ENDPOINT"] = endpoint or f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "weightgen", "hf", "acme/other", "-o", str(tmp_path / "out")],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Retrying" not in proc.stderr, proc.stderr
    assert "the Hugging Face Hub" in proc.stderr and "cannot be reached" in proc.stderr
    assert reason in proc.stderr.lower()
    assert proc.stderr.rstrip().endswith("or pass a path")  # whole, not cut
    assert seconds < 10, seconds  # start-up included; the probe itself is <= 3 s
    assert not (tmp_path / "out").exists()
