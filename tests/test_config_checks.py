"""Trust at the edges (issue 22): a config's typos and defaults, a spec that contradicts its
own config, heads weightgen does not build, and messages in the user's terms, said before
anything looks as if the run started. Every refusal is one line, exit 2 (or 1), nothing
written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import weightgen
from weightgen import hf
from weightgen.hf import config_check

HERE = Path(__file__).parent
ROOT = HERE.parent
LLAMA = json.loads((HERE / "data" / "hf_tiny" / "llama.json").read_text())
REAL_CONFIGS = sorted((HERE / "data" / "hf_configs").glob("*.json"))


def _config(tmp_path: Path, config: dict, name: str = "c.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return str(path)


def _one_line(result) -> str:
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


# --- configs: typos refused, unknown keys and defaults said (finding 1) -------------------


@pytest.mark.parametrize(
    ("typo", "field"),
    [
        ("num_layers", "num_hidden_layers"),  # T5's name for it
        ("n_layer", "num_hidden_layers"),  # GPT-2's
        ("hidden_dim", "hidden_size"),
        ("hiden_size", "hidden_size"),  # a typo
        ("intermediate_dim", "intermediate_size"),
        ("num_heads", "num_attention_heads"),
    ],
)
def test_a_near_miss_of_a_shape_field_is_refused_naming_the_field(tmp_path, run_cli, typo, field):
    """Before: the class default filled in (num_layers 4 made a 32-layer model) and the
    misspelled key was copied into config.json."""
    config = {k: v for k, v in LLAMA.items() if k != field}
    config[typo] = LLAMA[field]
    result = run_cli("hf", _config(tmp_path, config), "-o", str(tmp_path / "out"))
    assert result.code == 2, result.stderr
    line = _one_line(result)
    assert f"c.json: {typo} is not a llama field; did you mean {field}?" in line
    assert not (tmp_path / "out").exists()


def test_the_issues_config_is_refused(tmp_path, run_cli):
    config = {"model_type": "llama", "num_layers": 4, "hidden_dim": 256, "vocab_size": 1000}
    result = run_cli("hf", _config(tmp_path, config), "--spec")
    assert result.code == 2 and result.stdout == ""
    assert "did you mean" in _one_line(result)


def test_a_near_miss_of_a_field_that_is_set_is_only_reported(tmp_path, run_cli):
    """num_layers beside num_hidden_layers changes nothing weightgen builds: said, copied."""
    result = run_cli("hf", _config(tmp_path, {**LLAMA, "num_layers": 9}), "--spec")
    assert result.code == 0, result.stderr
    assert "num_layers is not a field of LlamaConfig" in result.stderr
    assert json.loads(result.stdout)["hf_config"]["num_layers"] == 9


def test_unknown_keys_are_reported_and_strict_refuses_them(tmp_path, run_cli):
    path = _config(tmp_path, {**LLAMA, "my_note": "x", "rope_theta": 1e4, "auto_map": {}})
    result = run_cli("hf", path, "--spec")
    assert result.code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "not a field" in line]
    assert len(notes) == 1 and "c.json: my_note is not a field of LlamaConfig" in notes[0]
    assert "rope_theta" not in notes[0] and "auto_map" not in notes[0]  # transformers' own
    assert json.loads(result.stdout)["hf_config"]["my_note"] == "x"  # copied as given
    strict = run_cli("hf", path, "--spec", "--strict")
    assert strict.code == 2 and strict.stdout == ""
    assert "my_note is not a field of LlamaConfig" in _one_line(strict)


def test_a_size_left_to_its_default_is_said_recorded_and_refused_by_strict(tmp_path, run_cli):
    """Before: dropping intermediate_size took 11008 without a word."""
    config = {k: v for k, v in LLAMA.items() if k != "intermediate_size"}
    path = _config(tmp_path, config)
    out = tmp_path / "out"
    result = run_cli("hf", path, "-o", str(out), "-q")
    assert result.code == 0, result.stderr
    result = run_cli("hf", path, "--spec")
    assert "note: intermediate_size not set: 11008, the LlamaConfig default" in result.stderr
    assert json.loads(result.stdout)["config_defaults"] == {"intermediate_size": 11008}
    manifest = json.loads((out / "weightgen.manifest.json").read_text())
    assert manifest["config_defaults"] == {"intermediate_size": 11008}
    again = run_cli("run", str(out / "weightgen.manifest.json"), "-o", str(tmp_path / "again"))
    assert again.code == 0, again.stderr  # a manifest with the record replays
    strict = run_cli("hf", path, "--spec", "--strict")
    assert strict.code == 2
    assert "intermediate_size not set (--strict)" in _one_line(strict)


def test_the_library_refuses_near_misses_too(tmp_path):
    config = {k: v for k, v in LLAMA.items() if k != "num_hidden_layers"}
    with pytest.raises(weightgen.UsageError, match="did you mean num_hidden_layers"):
        weightgen.model_spec({**config, "n_layers": 2})
    with pytest.raises(weightgen.UsageError, match="my_key"):
        weightgen.model_spec({**LLAMA, "my_key": 1}, strict=True)
    with pytest.raises(weightgen.UsageError, match="my_key"):
        weightgen.write_model({**LLAMA, "my_key": 1}, tmp_path / "out", strict=True)
    with pytest.raises(weightgen.UsageError, match="did you mean num_hidden_layers"):
        # a built-in type through transformers too, refused before transformers is imported
        weightgen.model_spec({**config, "num_layers": 2}, from_transformers=True)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("path", REAL_CONFIGS, ids=lambda p: p.stem)
def test_published_configs_have_no_near_misses(path):
    """The real configs' extra keys (ep_size, cache_implementation, n_ctx, ...) are reported,
    never mistaken for a typo of a field."""
    config = json.loads(path.read_text())
    family = hf.family_of(config)
    report = config_check.check(config, family)
    assert not report.defaults, report.defaults  # they spell out every size
    assert all(config_check.meant(k, family, config) is None for k in report.unknown)


@pytest.mark.slow
def test_the_known_keys_are_what_transformers_declares(tmp_path):
    """config_keys.json is what scripts/gen_config_keys.py reads from both pinned releases."""
    if not (ROOT / ".venv" / "transformers4").is_dir():
        pytest.skip("transformers 4.57.6 is not installed (.venv/transformers4)")
    written = tmp_path / "config_keys.json"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_config_keys.py"), "--out", str(written)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert written.read_bytes() == config_check.DATA.read_bytes()


# --- a spec must be what its hf_config gives (finding 3) ----------------------------------


def _spec(tmp_path: Path, run_cli, edit) -> str:
    result = run_cli("hf", _config(tmp_path, LLAMA, "config.json"), "--spec")
    spec = json.loads(result.stdout)
    edit(spec)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(spec))
    return str(path)


def _vocab(spec):
    spec["hf_config"]["vocab_size"] = 2000


def _no_head(spec):
    del spec["tensors"]["lm_head.weight"]


def _dtype(spec):
    spec["tensors"]["model.layers.0.mlp.up_proj.weight"]["dtype"] = "float16"


def _extra(spec):
    spec["tensors"]["extra.weight"] = {"init": "zeros", "shape": [4]}


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (
            _vocab,
            "model.json: model.embed_tokens.weight is [512, 128]; its hf_config "
            "(LlamaForCausalLM) gives [2000, 128]",
        ),
        (
            _no_head,
            "model.json has no tensor lm_head.weight; its hf_config (LlamaForCausalLM) "
            "gives it, [512, 128] float32",
        ),
        (
            _dtype,
            "model.layers.0.mlp.up_proj.weight is float16; its hf_config "
            "(LlamaForCausalLM) gives float32",
        ),
        (_extra, "model.json: extra.weight is not a tensor its hf_config"),
    ],
    ids=["vocab", "no-head", "dtype", "extra"],
)
def test_a_spec_that_contradicts_its_config_is_refused(tmp_path, run_cli, edit, fragment):
    """Before: each of these wrote a folder, and verify said ok."""
    spec = _spec(tmp_path, run_cli, edit)
    result = run_cli("run", spec, "-o", str(tmp_path / "out"))
    assert result.code == 2, result.stderr
    line = _one_line(result)
    assert fragment in line and "--no-config-check" in line
    assert not (tmp_path / "out").exists()
    escape = run_cli("run", spec, "-o", str(tmp_path / "out"), "--no-config-check", "-q")
    assert escape.code == 0, escape.stderr
    with pytest.raises(weightgen.UsageError, match="hf_config"):
        weightgen.run_spec(spec, tmp_path / "lib")


def test_an_edited_init_is_what_editing_is_for(tmp_path, run_cli):
    def zeros(spec):
        spec["tensors"]["model.layers.0.mlp.up_proj.weight"] = {
            "init": "zeros",
            "shape": [192, 128],
        }

    result = run_cli("run", _spec(tmp_path, run_cli, zeros), "-o", str(tmp_path / "o"), "-q")
    assert result.code == 0, result.stderr


def test_verify_holds_config_json_to_the_manifest(tmp_path, run_cli):
    out = tmp_path / "out"
    spec = _spec(tmp_path, run_cli, _vocab)
    written = run_cli("run", spec, "-o", str(out), "--no-config-check", "-q")
    assert written.code == 0, written.stderr
    result = run_cli("verify", str(out))  # before: "ok"
    assert result.code == 1
    assert "config.json (LlamaForCausalLM) gives [2000, 128]" in result.stderr
    assert run_cli("verify", str(out), "--no-config-check").code == 0
    config = out / "config.json"
    config.write_text(config.read_text().replace('"vocab_size": 2000', '"vocab_size": 512'))
    edited = run_cli("verify", str(out), "--no-config-check")
    assert edited.code == 1
    assert "config.json: vocab_size is 512; the manifest's hf_config has 2000" in edited.stderr


# --- heads (finding 5) ------------------------------------------------------------------


def test_an_architecture_weightgen_does_not_build_is_refused(tmp_path, run_cli):
    """Before: LlamaForSequenceClassification became LlamaForCausalLM without a word."""
    config = {**LLAMA, "architectures": ["LlamaForSequenceClassification"]}
    path = _config(tmp_path, config)
    result = run_cli("hf", path, "-o", str(tmp_path / "out"))
    assert result.code == 2
    line = _one_line(result)
    assert "architectures names 'LlamaForSequenceClassification'" in line
    assert "LlamaForCausalLM (--head causal-lm)" in line and "--from-transformers" in line
    assert not (tmp_path / "out").exists()
    chosen = run_cli("hf", path, "--spec", "--head", "causal-lm")  # said, so done
    assert chosen.code == 0, chosen.stderr
    assert json.loads(chosen.stdout)["hf_config"]["architectures"] == ["LlamaForCausalLM"]


# --- messages in the user's terms (finding 6) ---------------------------------------------


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"vocab_size": 0}, "c.json: vocab_size must be an integer"),
        ({"model_type": None}, "c.json has no model_type; add one"),
        ({"model_type": "Llama"}, "model_type 'Llama' is not supported; did you mean llama?"),
        ({"model_type": "qwen3-moe"}, "did you mean qwen3_moe?"),
        ({"model_type": "lama"}, "(did you mean llama?)"),
    ],
)
def test_config_errors_name_the_path_given(tmp_path, run_cli, change, fragment):
    config = {k: v for k, v in {**LLAMA, **change}.items() if v is not None}
    result = run_cli("hf", _config(tmp_path, config), "--spec")
    assert result.code == 2
    assert fragment in _one_line(result)
    assert "model_type None" not in result.stderr


def test_a_folder_without_config_json_is_named(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("hf", ".", "-o", "x/")
    assert result.code == 2
    assert "cannot read ./config.json" in _one_line(result)  # before: "config.json"


def test_a_safetensors_name_for_a_model_folder_speaks_of_the_model(tmp_path, run_cli):
    result = run_cli("hf", _config(tmp_path, LLAMA), "-o", str(tmp_path / "m.safetensors"))
    assert result.code == 2
    line = _one_line(result)
    assert "spec" not in line  # the user wrote none
    assert "written as a folder" in line and f"{tmp_path / 'm'}{os.sep}" in line


def test_verify_of_a_path_that_does_not_exist_says_so(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("verify", "nothere/")
    assert result.code == 1
    assert "weightgen: error: nothere/ does not exist" in _one_line(result)


def test_inspect_of_a_text_file_says_it_is_not_a_weight_file(tmp_path, run_cli):
    text = tmp_path / "notes.txt"
    text.write_text("# weightgen\n\nWrite weight files made by jax.nn.initializers.\n")
    result = run_cli("inspect", str(text))
    assert result.code == 1
    line = _one_line(result)
    assert "notes.txt is not a safetensors, npz or HDF5 file" in line
    assert "header length" not in line


# --- nothing said as if the run started before it can be refused (finding 7) -------------


@pytest.mark.parametrize("case", ["shard-size", "parent", "exists"])
def test_no_run_line_before_a_refusal(tmp_path, run_cli, case):
    path = _config(tmp_path, LLAMA)
    out = tmp_path / "out"
    args = ["hf", path, "-o", str(out)]
    if case == "shard-size":
        args += ["--max-shard-size", "5XB"]
    elif case == "parent":
        args[3] = str(tmp_path / "nope" / "deeper" / "out")
    else:
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"old")
    result = run_cli(*args)
    assert result.code != 0
    line = _one_line(result)  # before: "LlamaForCausalLM: 21 tensors, ..." came first
    assert line.startswith("weightgen: error: ") and "LlamaForCausalLM:" not in line
    if case == "exists":
        assert (out / "model.safetensors").read_bytes() == b"old"


def test_the_run_line_comes_once_the_checks_pass(tmp_path, run_cli):
    result = run_cli("hf", _config(tmp_path, LLAMA), "-o", str(tmp_path / "out"))
    assert result.code == 0, result.stderr
    first, *rest = result.stderr.splitlines()
    assert first.startswith("LlamaForCausalLM: ") and rest[-1].startswith("wrote ")


def test_strict_is_refused_where_the_keys_cannot_be_checked(tmp_path, run_cli):
    """A model type that only --from-transformers builds has no key data here: --strict
    would check nothing, so it is refused rather than silently ignored."""
    config = tmp_path / "opt.json"
    config.write_text(json.dumps({"model_type": "opt", "num_layers": 2, "foo_bar": 1}))
    result = run_cli("hf", str(config), "--from-transformers", "--strict", "--spec")
    assert result.code == 2
    assert "--strict checks the keys of the built-in families" in result.stderr
    assert result.stderr.count("\n") == 1
