"""The CLI through its real exit path: every error is one line, the right exit code, no
traceback and nothing written; every command has help with an example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import namedtuple

import numpy as np
import pytest
from conftest import readme_digest_of, reference, same_bytes

import weightgen
from weightgen.initializers import REGISTRY
from weightgen.plan import make_tensor

# (arguments, exit code, a fragment the message must contain)
ERRORS = [
    (["he-normal", "--shape", "3,-1"], 2, "non-negative integers"),
    (["he-normal", "--shape", "3,,4"], 2, "non-negative integers"),
    (["he-normal", "--shape", "3x4"], 2, "non-negative integers"),
    (["he-normral", "--shape", "3,3"], 2, "did you mean he-normal"),
    (["he-normal", "--shape", "3,3", "--dtype", "float33"], 2, "did you mean float32"),
    (["he-normal", "--shape", "3,3", "--dtype", "int32"], 2, "integer dtypes are not supported"),
    (["he-normal", "--shape", "3,3", "--sample-dtype", "int8"], 2, "--sample-dtype int8"),
    (
        [
            "variance-scaling",
            "--shape",
            "3,3",
            "--scale",
            "1",
            "--mode",
            "fan",
            "--distribution",
            "normal",
        ],
        2,
        "--mode: expected one of fan_in",
    ),
    (
        [
            "variance-scaling",
            "--shape",
            "3,3",
            "--scale",
            "1",
            "--mode",
            "fan_in",
            "--distribution",
            "cauchy",
        ],
        2,
        "--distribution: expected one of truncated_normal",
    ),
    (["variance-scaling", "--shape", "3,3"], 2, "needs --scale"),
    (["constant", "--shape", "3"], 2, "needs --value"),
    (["he-normal", "--shape", "3,3", "--in-axis", "5"], 2, "--in-axis 5: out of range"),
    (["he-normal", "--shape", "3,3", "--out-axis", "-3"], 2, "--out-axis -3: out of range"),
    (["he-normal", "--shape", "3,3", "--in-axis", "a"], 2, "--in-axis"),
    (["he-normal", "--shape", "5"], 2, "cannot compute fans of the 1-D shape"),
    (["he-normal", "--shape", "0,5"], 2, "zero-size shape"),
    (["orthogonal", "--shape", "5"], 2, "at least 2 dimensions"),
    (["orthogonal", "--shape", "5,5", "--column-axis", "2"], 2, "--column-axis 2"),
    (["delta-orthogonal", "--shape", "3,3"], 2, "3-, 4- or 5-D"),
    (["delta-orthogonal", "--shape", "3,3,3,3,3,3"], 2, "3-, 4- or 5-D"),
    (["delta-orthogonal", "--shape", "3,5,4"], 2, "fan_in <= fan_out"),
    (["truncated-normal", "--shape", "3", "--lower", "2", "--upper", "1"], 2, "lower must be"),
    (["normal", "--shape", "3", "--stddev", "nan"], 2, "finite"),
    (["uniform", "--shape", "3", "--dtype", "complex64"], 2, "real values only"),
    (["he-normal", "--shape", "3,3", "--seed", "-1"], 2, "--seed"),
    (["he-normal", "--shape", "3,3", "--seed", str(2**32)], 2, "--seed"),
    (["he-normal", "--shape", "3,3", "--bogus"], 2, "No such option"),
    (["he-normal", "--shape", str(2**48)], 2, "too large"),
    (["he-normal", "--shape", "3,3", "--dtype", "complex128"], 2, "use --format npz"),
    (["he-normal", "--shape", "3,3", "--chunk-size", "0"], 2, "--chunk-size"),
    (["he-normal", "--shape", "3,3", "--devices", "tpu"], 2, "no tpu devices"),
]


def _assert_clean_failure(result, code, fragment):
    assert result.code == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("weightgen: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "code", "fragment"), ERRORS, ids=lambda v: str(v)[:40])
def test_error_paths(run_cli, tmp_path, args, code, fragment):
    out = tmp_path / "w.safetensors"
    result = run_cli(*args, "-o", str(out))
    _assert_clean_failure(result, code, fragment)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


def test_unknown_suffix(run_cli, tmp_path):
    result = run_cli("he-normal", "--shape", "3,3", "-o", str(tmp_path / "w.bin"))
    _assert_clean_failure(result, 2, "--format")
    assert list(tmp_path.iterdir()) == []


def test_missing_output_folder(run_cli, tmp_path):
    result = run_cli("he-normal", "--shape", "3,3", "-o", str(tmp_path / "no" / "w.npz"))
    _assert_clean_failure(result, 2, "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_hdf5_to_stdout_refused(run_cli):
    result = run_cli("he-normal", "--shape", "3,3", "--format", "hdf5", "-o", "-")
    _assert_clean_failure(result, 2, "stdout")
    assert result.stdout_bytes == b""


def test_existing_file_untouched_without_force(run_cli, tmp_path):
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"precious")
    result = run_cli("he-normal", "--shape", "3,3", "-o", str(out))
    _assert_clean_failure(result, 1, "--force")
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_force_replaces(run_cli, tmp_path):
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"old")
    assert run_cli("he-normal", "--shape", "3,3", "-o", str(out), "--force", "-q").code == 0
    assert weightgen.load(out)["weight"].shape == (3, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_larger_than_free_space_refused_before_generation(run_cli, tmp_path, monkeypatch):
    import shutil

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**6, 0, 10**6))
    # 512 x 512 float32 = 1 MiB of data: just over the fake 10**6 free bytes.
    result = run_cli("he-normal", "--shape", "512,512", "-o", str(tmp_path / "w.npz"))
    _assert_clean_failure(result, 1, "free")
    assert list(tmp_path.iterdir()) == []
    assert "jax" not in result.stderr.lower()


def test_huge_tensor_refused_fast(run_cli, tmp_path):
    """Exact integers: 2**47 x 2**47 elements is refused without allocating anything."""
    result = run_cli("normal", "--shape", f"{2**47},{2**47}", "-o", str(tmp_path / "w.npz"))
    _assert_clean_failure(result, 1, "free")


@pytest.mark.parametrize("name", [*REGISTRY, "xavier-uniform", "kaiming_normal", "he_normal"])
def test_every_initializer_command_has_help_with_example(run_cli, name):
    result = run_cli(name, "--help")
    assert result.code == 0
    assert "Example:" in result.stdout
    assert "--shape" in result.stdout and "--seed" in result.stdout


@pytest.mark.parametrize("command", ["list", "inspect"])
def test_other_commands_have_help_with_example(run_cli, command):
    result = run_cli(command, "--help")
    assert result.code == 0 and "Example:" in result.stdout


def test_list_shows_every_initializer_alias_and_default(run_cli):
    result = run_cli("list", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(REGISTRY)
    assert rows["he-normal"]["aliases"] == ["kaiming-normal"]
    assert rows["truncated-normal"]["parameters"] == {
        "stddev": "0.01",
        "lower": "-2.0",
        "upper": "2.0",
    }
    assert rows["variance-scaling"]["parameters"]["mode"] == "required"
    text = run_cli("list").stdout
    for name in (*REGISTRY, "xavier-normal", "kaiming-uniform"):
        assert name in text


@pytest.mark.parametrize("spelling", ["he-normal", "he_normal", "kaiming-normal", "kaiming_normal"])
def test_aliases_and_underscores_give_the_same_bytes(run_cli, tmp_path, spelling):
    out = tmp_path / "w.safetensors"
    assert run_cli(spelling, "--shape", "4,6", "--seed", "3", "-o", str(out), "-q").code == 0
    expected = reference(make_tensor("he-normal", (4, 6), seed=3))
    assert same_bytes(weightgen.load(out)["weight"], expected)


def test_headline_command_is_byte_identical_to_jax(run_cli, tmp_path):
    out = tmp_path / "k.safetensors"
    result = run_cli("he-normal", "--shape", "3,3,64,128", "-o", str(out))
    assert result.code == 0, result.stderr
    assert "wrote" in result.stderr and result.stdout == ""
    expected = reference(make_tensor("he-normal", (3, 3, 64, 128)))
    assert same_bytes(weightgen.load(out)["weight"], expected)


def test_parameters_reach_jax(run_cli, tmp_path):
    out = tmp_path / "w.h5"
    args = [
        "variance-scaling",
        "--shape",
        "3,4,5",
        "--scale",
        "0.3",
        "--mode",
        "fan_geo_avg",
        "--distribution",
        "uniform",
        "--in-axis",
        "0,1",
        "--out-axis",
        "2",
        "--name",
        "layer/w",
        "--seed",
        "12",
        "-o",
        str(out),
    ]
    assert run_cli(*args).code == 0
    spec = make_tensor(
        "variance-scaling",
        (3, 4, 5),
        seed=12,
        params={
            "scale": 0.3,
            "mode": "fan_geo_avg",
            "distribution": "uniform",
            "in_axis": (0, 1),
            "out_axis": 2,
        },
    )
    assert same_bytes(weightgen.load(out)["layer/w"], reference(spec))


def test_stdout_is_the_same_file(run_cli, tmp_path):
    out = tmp_path / "w.safetensors"
    assert run_cli("normal", "--shape", "9,7", "-o", str(out), "-q").code == 0
    piped = run_cli("normal", "--shape", "9,7", "-o", "-", "--format", "safetensors", "-q")
    assert piped.code == 0
    assert piped.stdout_bytes == out.read_bytes()


def test_npz_to_stdout_loads(run_cli, tmp_path):
    piped = run_cli("ones", "--shape", "5", "-o", "-", "--format", "npz", "-q")
    path = tmp_path / "p.npz"
    path.write_bytes(piped.stdout_bytes)
    assert np.array_equal(np.load(path)["weight"], np.ones(5, np.float32))


def test_half_precision_hint(run_cli, tmp_path):
    drawn_in_bf16 = run_cli(
        "normal", "--shape", "4", "--dtype", "bfloat16", "-o", str(tmp_path / "a.npz")
    )
    assert "hint:" in drawn_in_bf16.stderr and "--sample-dtype float32" in drawn_in_bf16.stderr
    drawn_in_f32 = run_cli(
        "normal",
        "--shape",
        "4",
        "--dtype",
        "bfloat16",
        "--sample-dtype",
        "float32",
        "-o",
        str(tmp_path / "b.npz"),
    )
    assert "hint:" not in drawn_in_f32.stderr
    quiet = run_cli(
        "normal", "--shape", "4", "--dtype", "bfloat16", "-q", "-o", str(tmp_path / "c.npz")
    )
    assert quiet.stderr == ""


def test_json_summary_on_stdout(run_cli, tmp_path):
    out = tmp_path / "w.npz"
    result = run_cli("zeros", "--shape", "2,3", "-o", str(out), "--json", "-q")
    summary = json.loads(result.stdout)
    assert summary["format"] == "npz" and summary["bytes"] == 24
    assert summary["tensors"][0]["digest"] == readme_digest_of(bytes(24)).hex()


def test_inspect_reports_stats(run_cli, tmp_path):
    out = tmp_path / "w.safetensors"
    assert run_cli("normal", "--shape", "300,7", "--stddev", "2", "-o", str(out), "-q").code == 0
    values = weightgen.load(out)["weight"].astype(np.float64)
    report = json.loads(run_cli("inspect", str(out), "--json").stdout)
    (tensor,) = report["tensors"]
    assert tensor["shape"] == [300, 7] and tensor["dtype"] == "float32"
    assert tensor["bytes"] == 300 * 7 * 4
    assert tensor["mean"] == pytest.approx(values.mean(), abs=1e-12)
    assert tensor["std"] == pytest.approx(values.std(), rel=1e-12)
    assert (tensor["min"], tensor["max"]) == (values.min(), values.max())
    table = run_cli("inspect", str(out)).stdout
    assert "weight" in table and "(300, 7)" in table


def test_inspect_reads_past_a_broken_manifest_beside_the_file(run_cli, tmp_path):
    """The manifest found beside a file only adds the rule column: a damaged one leaves the
    statistics; one named with --manifest must be readable."""
    out = tmp_path / "w.safetensors"
    assert run_cli("normal", "--shape", "30,7", "-o", str(out), "-q").code == 0
    from weightgen.manifest import locate

    beside = tmp_path / os.path.basename(locate(out)[0])  # where inspect looks for one
    beside.write_text("{broken")
    report = json.loads(run_cli("inspect", str(out), "--json").stdout)
    assert [t["expected"] for t in report["tensors"]] == [None]
    _assert_clean_failure(run_cli("inspect", str(out), "--manifest", str(beside)), 2, "JSON")


def test_inspect_check_exits_1_when_a_tensor_is_off_its_rule(run_cli, tmp_path):
    """Plain inspect reports and exits 0; --check is a gate for scripts: 1 when a tensor is
    off its recorded rule, 0 when none is, 2 when there is no rule to check against."""
    from weightgen.manifest import locate

    good, wide = tmp_path / "good.safetensors", tmp_path / "wide.safetensors"
    made = ("normal", "--shape", "256,256", "-q", "--manifest")
    assert run_cli(*made, locate(good)[0], "--stddev", "0.02", "-o", str(good)).code == 0
    assert run_cli(*made, str(tmp_path / "wide.json"), "--stddev", "0.5", "-o", str(wide)).code == 0
    rule = ("--manifest", locate(good)[0])  # says stddev 0.02: wide's 0.5 is off
    plain = run_cli("inspect", str(wide), *rule)
    assert plain.code == 0 and "1 off" in plain.stdout
    checked = run_cli("inspect", str(wide), *rule, "--check")
    assert checked.stdout == plain.stdout  # the same report, then the verdict
    _assert_clean_failure(checked, 1, "--check found a problem: weight: ")
    as_json = run_cli("inspect", str(wide), *rule, "--check", "--json")
    assert as_json.code == 1 and json.loads(as_json.stdout)["tensors"][0]["off"]
    assert run_cli("inspect", str(good), "--check").code == 0
    _assert_clean_failure(
        run_cli("inspect", str(tmp_path / "wide.safetensors"), "--check"), 2, "no tensor has"
    )


def test_inspect_bad_file_is_one_line(run_cli, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    _assert_clean_failure(run_cli("inspect", str(bad)), 1, "not valid JSON")


def test_help_list_and_inspect_do_not_import_jax(tmp_path):
    out = tmp_path / "w.npz"
    np.savez(out, weight=np.arange(6, dtype=np.float32))
    code = (
        "import sys\n"
        "from weightgen.cli import main\n"
        "for argv in (['--help'], ['list'], ['he-normal', '--help'], ['inspect', sys.argv[1]]):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, e.code\n"
        "assert 'jax' not in sys.modules, 'jax was imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 0, proc.stderr


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "weightgen", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and weightgen.__version__ in proc.stdout


def test_json_refused_when_stdout_carries_the_file(run_cli):
    result = run_cli("ones", "--shape", "2", "-o", "-", "--format", "npz", "--json")
    _assert_clean_failure(result, 2, "--json cannot be combined with -o -")
    assert result.stdout_bytes == b""


@pytest.mark.slow
def test_the_readme_library_snippet_runs_twice_in_a_row(tmp_path):
    """The README's Library API code, as written, in an empty folder, twice (a second run
    meets the first one's files); a block that needs the network or extras says so first."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Library API", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]
    runnable = [b for b in blocks if not b.startswith("# Needs network")]
    assert runnable and all("from_transformers=True" not in b for b in runnable)
    marked = [b for b in blocks if b not in runnable]
    assert all("torch and transformers" in b for b in marked)
    code = "\n".join(["import weightgen", *runnable])
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": os.pathsep.join(sys.path)}
    for attempt in (1, 2):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            start_new_session=True,
        )
        assert proc.returncode == 0, (attempt, proc.stderr[-2000:])
    assert weightgen.verify(None, tmp_path / "seed") == []
