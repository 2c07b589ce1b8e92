"""Spec files, the key rule, manifests, replay, verify, sharded checkpoints and pipelines."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import blake3
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import readme_digest_of, readme_file_digest, reference, same_bytes
from safetensors import safe_open

import weightgen
from weightgen.errors import HashMismatchError, UsageError
from weightgen.plan import make_tensor
from weightgen.specfile import load_spec, parse_spec

MODEL = {
    "seed": 7,
    "dtype": "float32",
    "tensors": {
        "embed.weight": {"init": "normal", "shape": [100, 16], "stddev": 0.02},
        "block.0.mlp.kernel": {"init": "he-normal", "shape": [16, 64]},
        "block.0.mlp.bias": {"init": "zeros", "shape": [64]},
        "block.0.attn.q": {
            "init": "glorot-uniform",
            "shape": [16, 16],
            "dtype": "bfloat16",
            "sample_dtype": "float32",
        },
        "rnn.kernel": {"init": "orthogonal", "shape": [32, 32], "seed": 99, "dtype": "bfloat16"},
        "head": {
            "init": "variance-scaling",
            "shape": [16, 10],
            "scale": 0.1,
            "mode": "fan_avg",
            "distribution": "uniform",
        },
    },
}
SUFFIX = {"safetensors": ".safetensors", "npz": ".npz", "hdf5": ".h5"}


def _spec_file(tmp_path, document=MODEL, name="model.json"):
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


def _jax_key_rule(root_seed: int, name: str):
    """The README's key rule, written out with JAX alone."""
    h = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "little")
    return jax.random.fold_in(jax.random.key(root_seed), h)


def test_key_rule_matches_jax_directly(tmp_path):
    out = tmp_path / "m.safetensors"
    weightgen.run_spec(_spec_file(tmp_path), out)
    loaded = weightgen.load(out)
    init = jax.nn.initializers
    expected = {
        "embed.weight": init.normal(0.02)(_jax_key_rule(7, "embed.weight"), (100, 16)),
        "block.0.mlp.kernel": init.he_normal()(_jax_key_rule(7, "block.0.mlp.kernel"), (16, 64)),
        "block.0.attn.q": init.glorot_uniform()(
            _jax_key_rule(7, "block.0.attn.q"), (16, 16), jax.numpy.float32
        ).astype(jax.numpy.bfloat16),
        # own seed: jax.random.key(99); orthogonal in bfloat16 draws in float32 by default
        "rnn.kernel": init.orthogonal()(jax.random.key(99), (32, 32), jax.numpy.float32).astype(
            jax.numpy.bfloat16
        ),
    }
    for name, value in expected.items():
        assert same_bytes(loaded[name], np.asarray(value)), name


def test_adding_removing_reordering_tensors_changes_nothing_else(tmp_path):
    base = weightgen.run_spec(_spec_file(tmp_path), tmp_path / "a.safetensors", force=True)
    bigger = json.loads(json.dumps(MODEL))
    bigger["tensors"] = dict(reversed(list(bigger["tensors"].items())))
    bigger["tensors"]["extra.weight"] = {"init": "normal", "shape": [5, 5]}
    del bigger["tensors"]["block.0.mlp.bias"]
    other = weightgen.run_spec(
        _spec_file(tmp_path, bigger, "b.json"), tmp_path / "b.safetensors", force=True
    )
    before = {t.name: t.digest for t in base.tensors}
    after = {t.name: t.digest for t in other.tensors}
    for name in set(before) & set(after):
        assert before[name] == after[name], name
    assert set(after) - set(before) == {"extra.weight"}


@pytest.mark.parametrize("fmt", ["safetensors", "npz", "hdf5"])
def test_replay_from_manifest_is_byte_identical(tmp_path, fmt):
    first = tmp_path / f"m{SUFFIX[fmt]}"
    result = weightgen.run_spec(_spec_file(tmp_path), first, manifest=str(first) + ".manifest.json")
    manifest = json.loads((tmp_path / f"m{SUFFIX[fmt]}.manifest.json").read_text())
    assert manifest["weightgen_manifest"] == 2
    assert manifest["digest"] == {"algorithm": "blake3", "block_bytes": 16 << 20}
    assert manifest["output"]["format"] == fmt
    (recorded,) = manifest["output"]["files"]
    assert recorded["bytes"] == first.stat().st_size
    if fmt == "safetensors":  # the README's few lines of Python, with blake3 alone
        assert recorded["digest"] == readme_file_digest(first)
    assert set(manifest["created_by"]) >= {"weightgen", "jax", "jaxlib", "numpy"}
    assert manifest["environment"]["jax_threefry_partitionable"] is True
    assert manifest["tensors"]["rnn.kernel"]["seed"] == 99
    assert "seed" not in manifest["tensors"]["embed.weight"]  # derived by the key rule
    words = [int(w) for w in jax.random.key_data(_jax_key_rule(7, "embed.weight"))]
    assert manifest["tensors"]["embed.weight"]["key"] == f"{words[0]:08x}{words[1]:08x}"
    for t in result.tensors:
        assert manifest["tensors"][t.name]["digest"] == t.digest
    loaded = weightgen.load(first)
    for name, entry in manifest["tensors"].items():  # the tensor digest, by hand
        assert entry["digest"] == readme_digest_of(loaded[name].tobytes()).hex(), name
    second = tmp_path / f"again{SUFFIX[fmt]}"
    weightgen.run_spec(str(first) + ".manifest.json", second, chunk_size=7)
    assert second.read_bytes() == first.read_bytes()
    assert weightgen.verify(str(first) + ".manifest.json", second) == []


def test_transform_is_recorded_and_replays_byte_for_byte(tmp_path):
    """A transform (Qwen3-Next's A_log) is JAX alone with the key rule, sits in the manifest
    with every parameter, and replays and verifies like any tensor; its untransformed twin
    (the same initializer and dtypes, one engine) is untouched."""
    document = {
        "seed": 5,
        "dtype": "bfloat16",
        "sample_dtype": "float32",
        "tensors": {
            "A_log": {
                "init": "uniform",
                "shape": [48, 32],
                "scale": 15.99,
                "transform": {"name": "log", "offset": 0.01},
            },
            "plain": {"init": "uniform", "shape": [48, 32], "scale": 15.99},
            "log16": {"init": "uniform", "shape": [7], "scale": 16, "transform": "log"},
        },
    }
    first = tmp_path / "m.safetensors"
    manifest_path = str(first) + ".manifest.json"
    weightgen.run_spec(_spec_file(tmp_path, document), first, manifest=manifest_path)
    recorded = json.loads(Path(manifest_path).read_text())["tensors"]
    assert recorded["A_log"]["transform"] == {"name": "log", "offset": 0.01}
    assert recorded["log16"]["transform"] == {"name": "log", "offset": 0.0}
    assert "transform" not in recorded["plain"]
    loaded = weightgen.load(first)
    uniform = jax.nn.initializers.uniform
    for name, scale, offset in (("A_log", 15.99, 0.01), ("plain", 15.99, None), ("log16", 16, 0)):
        shape = tuple(document["tensors"][name]["shape"])
        drawn = uniform(scale)(_jax_key_rule(5, name), shape, jnp.float32)
        values = drawn if offset is None else jnp.log(drawn + offset)
        assert same_bytes(loaded[name], np.asarray(values.astype(jnp.bfloat16))), name
    second = tmp_path / "again.safetensors"
    weightgen.run_spec(manifest_path, second, chunk_size=7)
    assert second.read_bytes() == first.read_bytes()
    assert weightgen.verify(manifest_path, second) == []


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"transform": "exp"}, "transform 'exp' is unknown; the transforms are: log"),
        ({"transform": {"name": "log", "scale": 2}}, "transform log has no parameter 'scale'"),
        ({"transform": {"offset": 1}}, 'transform: expected a name such as "log"'),
        ({"transform": 3}, 'transform: expected a name such as "log"'),
        ({"transform": {"name": "log", "offset": "x"}}, "transform --offset: expected a number"),
        ({"init": "normal", "transform": "log"}, "normal draws values of either sign"),
        ({"scale": -1.0, "transform": "log"}, "values down to -1, and log(x + offset) is NaN"),
        ({"transform": {"name": "log", "offset": -0.5}}, "is NaN below x = 0.5"),
        ({"init": "orthogonal", "transform": "log"}, "computed whole (QR)"),
        ({"init": "ones", "dtype": "complex64", "transform": "log"}, "real dtypes only"),
    ],
)
def test_bad_transforms_are_refused_naming_the_tensor(entry, fragment):
    document = {"tensors": {"blocks.0.A_log": {"init": "uniform", "shape": [4, 4], **entry}}}
    with pytest.raises(UsageError) as info:
        parse_spec(document)
    assert str(info.value).startswith("tensor 'blocks.0.A_log': "), str(info.value)
    assert fragment in str(info.value), str(info.value)


def test_replay_stops_at_first_differing_tensor_and_leaves_nothing(tmp_path):
    out = tmp_path / "m.safetensors"
    weightgen.run_spec(_spec_file(tmp_path), out, manifest=str(out) + ".manifest.json")
    manifest = json.loads((tmp_path / "m.safetensors.manifest.json").read_text())
    entry = manifest["tensors"]["embed.weight"]  # as if JAX's numbers had moved
    entry["blocks"] = ["0" * 64]
    entry["digest"] = blake3.blake3(bytes(32)).hexdigest()
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(manifest))
    with pytest.raises(
        HashMismatchError, match=r"embed\.weight.*block 0 \(bytes 0\.\.6400"
    ) as info:
        weightgen.run_spec(str(tampered), tmp_path / "replay.safetensors")
    assert "jax" in str(info.value)  # says which versions made the manifest
    assert not (tmp_path / "replay.safetensors").exists()
    assert not any(".weightgen-tmp" in p.name for p in tmp_path.iterdir())


def test_replay_refuses_a_key_this_jax_would_not_derive(tmp_path):
    out = tmp_path / "m.npz"
    weightgen.run_spec(_spec_file(tmp_path), out, manifest=str(out) + ".manifest.json")
    manifest = json.loads((tmp_path / "m.npz.manifest.json").read_text())
    manifest["tensors"]["head"]["key"] = "0123456789abcdef"
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(manifest))
    with pytest.raises(HashMismatchError, match="head"):
        weightgen.run_spec(str(tampered), tmp_path / "replay.npz")
    assert not (tmp_path / "replay.npz").exists()


@pytest.fixture
def made(tmp_path):
    out = tmp_path / "m.safetensors"
    weightgen.run_spec(_spec_file(tmp_path), out, manifest=str(out) + ".manifest.json")
    return out, str(out) + ".manifest.json"


def test_verify_passes_untouched_file(made):
    out, manifest = made
    assert weightgen.verify(manifest, out) == []


def test_verify_catches_a_flipped_data_bit(made):
    out, manifest = made
    data = bytearray(out.read_bytes())
    data[-5] ^= 0x10  # inside the last tensor's data
    out.write_bytes(bytes(data))
    problems = weightgen.verify(manifest, out)
    assert [(p.tensor, p.kind) for p in problems] == [("rnn.kernel", "differs")]
    assert "block 0 (bytes 0..2048 of its data)" in problems[0].detail


def test_verify_catches_truncation(made):
    out, manifest = made
    out.write_bytes(out.read_bytes()[:-100])
    problems = weightgen.verify(manifest, out)
    assert len(problems) == 1 and problems[0].kind == "file"


def test_verify_catches_missing_extra_and_changed_tensors(tmp_path, made):
    out, manifest = made
    tensors = weightgen.load(out)
    del tensors["head"]
    tensors["intruder"] = np.zeros(3, np.float32)
    tensors["embed.weight"] = tensors["embed.weight"][:50]
    tensors["block.0.mlp.bias"] = tensors["block.0.mlp.bias"].astype(np.float16)
    other = tmp_path / "other.npz"
    np.savez(
        other,
        **{k: v for k, v in tensors.items() if v.dtype.kind != "V" and str(v.dtype) != "bfloat16"},
    )
    found = {(p.tensor, p.kind) for p in weightgen.verify(manifest, other)}
    assert ("head", "missing") in found
    assert ("intruder", "extra") in found
    assert ("embed.weight", "shape") in found
    assert ("block.0.mlp.bias", "dtype") in found


def test_verify_cli_exit_codes(run_cli, made):
    out, manifest = made
    ok = run_cli("verify", manifest, str(out))
    assert ok.code == 0 and "ok" in ok.stderr
    out.write_bytes(out.read_bytes()[:-1] + b"\x01")
    bad = run_cli("verify", manifest, str(out), "--json")
    assert bad.code == 1
    assert json.loads(bad.stdout)["problems"][0]["tensor"] == "rnn.kernel"


def test_sharded_checkpoint(tmp_path):
    folder = tmp_path / "ckpt"
    weightgen.run_spec(_spec_file(tmp_path), folder, max_shard_size=8000, manifest=True)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(files) >= 3 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert set(index["weight_map"].values()) == set(files)
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in weightgen.load(folder).values())
    flat = tmp_path / "flat.safetensors"
    weightgen.run_spec(_spec_file(tmp_path), flat)
    unsharded = weightgen.load(flat)
    for name, file in index["weight_map"].items():  # each shard opens with the reference reader
        with safe_open(str(folder / file), framework="flax") as f:
            assert same_bytes(np.asarray(f.get_tensor(name)), unsharded[name])
    manifest = folder / "weightgen.manifest.json"  # a folder carries its manifest inside
    recorded = json.loads(manifest.read_text())["output"]["files"]
    assert [f["name"] for f in recorded] == sorted([*files, "model.safetensors.index.json"])
    for f in recorded:
        if f["name"].endswith(".safetensors"):
            assert f["digest"] == readme_file_digest(folder / f["name"])
    assert weightgen.verify(str(manifest), folder) == []
    assert weightgen.verify(None, folder) == []
    assert weightgen.verify(None, folder / "model.safetensors.index.json") == []
    again = tmp_path / "again"
    weightgen.run_spec(str(manifest), again, max_shard_size=8000, manifest=True)
    for name in [*files, "weightgen.manifest.json"]:
        assert (again / name).read_bytes() == (folder / name).read_bytes()


def test_sharded_replaces_only_checkpoints(tmp_path, run_cli):
    spec = _spec_file(tmp_path)
    folder = tmp_path / "ckpt"
    assert run_cli("run", spec, "-o", str(folder), "--max-shard-size", "8KB", "-q").code == 0
    again = run_cli("run", spec, "-o", str(folder), "--max-shard-size", "8KB", "-q")
    assert again.code == 1 and "--force" in again.stderr
    forced = run_cli("run", spec, "-o", str(folder), "--max-shard-size", "20KB", "-q", "--force")
    assert forced.code == 0, forced.stderr
    assert len(list(folder.glob("*.safetensors"))) < 7
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "keep.txt").write_text("mine")
    refused = run_cli("run", spec, "-o", str(plain), "--max-shard-size", "8KB", "--force")
    assert refused.code == 2 and "not a checkpoint folder" in refused.stderr
    assert (plain / "keep.txt").read_text() == "mine"


def test_inspect_sharded_folder(tmp_path, run_cli):
    folder = tmp_path / "ckpt"
    weightgen.run_spec(_spec_file(tmp_path), folder, max_shard_size=8000)
    report = json.loads(run_cli("inspect", str(folder), "--json").stdout)
    assert report["format"] == "sharded"
    assert len(report["tensors"]) == len(MODEL["tensors"])


def test_stdin_spec_and_stdout_output(run_cli, tmp_path):
    spec = json.dumps(MODEL).encode()
    piped = run_cli("run", "-", "-o", "-", "--format", "safetensors", "-q", input=spec)
    assert piped.code == 0, piped.stderr
    out = tmp_path / "file.safetensors"
    assert run_cli("run", _spec_file(tmp_path), "-o", str(out), "-q").code == 0
    assert piped.stdout_bytes == out.read_bytes()
    npz = run_cli("run", "-", "-o", "-", "--format", "npz", "-q", input=spec)
    assert npz.code == 0
    (tmp_path / "p.npz").write_bytes(npz.stdout_bytes)
    assert set(weightgen.load(tmp_path / "p.npz")) == set(MODEL["tensors"])


def test_json_summary_is_the_only_stdout(run_cli, tmp_path):
    out = tmp_path / "m.safetensors"
    result = run_cli("run", _spec_file(tmp_path), "-o", str(out), "--json")
    summary = json.loads(result.stdout)
    assert summary["manifest"] == str(out) + ".manifest.json"
    assert {t["name"] for t in summary["tensors"]} == set(MODEL["tensors"])
    assert all(len(t["digest"]) == 64 for t in summary["tensors"])
    assert summary["files"][0]["digest"] == readme_file_digest(out)
    assert "sha256" not in summary["files"][0]  # only on request: it costs a read
    assert "wrote" in result.stderr
    again = run_cli(
        "run", _spec_file(tmp_path), "-o", str(out), "--json", "--force", "--file-sha256"
    )
    assert (
        json.loads(again.stdout)["files"][0]["sha256"]
        == hashlib.sha256(out.read_bytes()).hexdigest()
    )


def test_single_tensor_manifest_replays(run_cli, tmp_path):
    out = tmp_path / "k.safetensors"
    args = ["he-normal", "--shape", "3,3,8,16", "--seed", "5", "--dtype", "bfloat16"]
    assert run_cli(*args, "-o", str(out), "--manifest", str(tmp_path / "k.json"), "-q").code == 0
    again = tmp_path / "again.safetensors"
    assert run_cli("run", str(tmp_path / "k.json"), "-o", str(again), "-q").code == 0
    assert again.read_bytes() == out.read_bytes()
    expected = reference(make_tensor("he-normal", (3, 3, 8, 16), seed=5, dtype="bfloat16"))
    assert same_bytes(weightgen.load(again)["weight"], expected)


def test_toml_spec(tmp_path):
    toml = tmp_path / "model.toml"
    toml.write_text(
        'seed = 7\n[tensors."embed.weight"]\ninit = "normal"\nshape = [100, 16]\nstddev = 0.02\n'
    )
    out = tmp_path / "t.safetensors"
    weightgen.run_spec(str(toml), out)
    json_out = tmp_path / "j.safetensors"
    weightgen.run_spec(
        _spec_file(
            tmp_path, {"seed": 7, "tensors": {"embed.weight": MODEL["tensors"]["embed.weight"]}}
        ),
        json_out,
    )
    assert out.read_bytes() == json_out.read_bytes()


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"tensors": {"w": {"init": "normal", "shape": [2], "stdev": 1}}}, "'stdev'"),
        ({"tensors": {"w": {"init": "normal", "shape": [2], "stdev": 1}}}, "tensor 'w'"),
        ({"tensors": {"w": {"init": "nromal", "shape": [2]}}}, "did you mean normal"),
        ({"tensors": {"w": {"shape": [2]}}}, "missing 'init'"),
        ({"tensors": {"w": {"init": "normal"}}}, "missing 'shape'"),
        ({"tensors": {}}, "non-empty"),
        ({"tensor": {}}, "unknown top-level key 'tensor'"),
        ({"tensors": {"w": {"init": "he-normal", "shape": [3]}}}, "fans"),
        ({"tensors": {"w": {"init": "normal", "shape": [2], "dtype": "int8"}}}, "integer"),
        ({"seed": -3, "tensors": {"w": {"init": "normal", "shape": [2]}}}, "seed"),
        (
            {
                "tensors": {
                    "a": {"init": "ones", "shape": [1]},
                    "a/b": {"init": "ones", "shape": [1]},
                }
            },
            "clash",
        ),
        ({"tensors": {"../x": {"init": "ones", "shape": [1]}}}, "'..'"),
        ({"tensors": {"w": {"init": "normal", "shape": [2], "sha256": "00"}}}, "'sha256'"),
    ],
)
def test_spec_errors_name_the_problem(document, fragment):
    with pytest.raises(UsageError) as info:
        parse_spec(document)
    assert fragment in str(info.value)


def test_spec_duplicate_keys_and_nan_refused(tmp_path):
    dup = tmp_path / "dup.json"
    dup.write_text(
        '{"tensors": {"w": {"init": "ones", "shape": [1]}, "w": {"init": "ones", "shape": [1]}}}'
    )
    with pytest.raises(UsageError, match="duplicate key 'w'"):
        load_spec(str(dup))
    nan = tmp_path / "nan.json"
    nan.write_text('{"tensors": {"w": {"init": "normal", "shape": [1], "stddev": NaN}}}')
    with pytest.raises(UsageError, match="NaN"):
        load_spec(str(nan))


def test_manifest_written_beside_output_by_default(run_cli, tmp_path):
    out = tmp_path / "m.npz"
    assert run_cli("run", _spec_file(tmp_path), "-o", str(out), "-q").code == 0
    assert (tmp_path / "m.npz.manifest.json").exists()
    shutil.rmtree(tmp_path / "sub", ignore_errors=True)
    none = tmp_path / "n.npz"
    assert run_cli("run", _spec_file(tmp_path), "-o", str(none), "-q", "--no-manifest").code == 0
    assert not (tmp_path / "n.npz.manifest.json").exists()


def test_verify_takes_the_manifest_alone(run_cli, tmp_path):
    out = tmp_path / "m.safetensors"
    assert run_cli("run", _spec_file(tmp_path), "-o", str(out), "-q").code == 0
    assert run_cli("verify", str(out) + ".manifest.json").code == 0
    folder = tmp_path / "ckpt"
    assert (
        run_cli(
            "run", _spec_file(tmp_path), "-o", str(folder), "-q", "--max-shard-size", "8KB"
        ).code
        == 0
    )
    assert run_cli("verify", str(folder / "weightgen.manifest.json")).code == 0
    missing = run_cli("verify", str(tmp_path))
    assert missing.code == 2 and "holds no weightgen.manifest.json" in missing.stderr


def test_writes_without_blake3_unless_a_digest_is_asked_for(tmp_path, monkeypatch):
    """blake3 is imported only to hash: a machine without it writes files (no manifest, no
    digests) and is told what to do when it asks for one."""
    import sys

    from weightgen import digest

    monkeypatch.setitem(sys.modules, "blake3", None)  # import blake3 now fails
    digest._blake3.cache_clear()  # as in a process that never had it
    out = tmp_path / "w.safetensors"
    weightgen.generate("normal", (40, 30), out, seed=2, hashes=False)
    assert same_bytes(
        weightgen.load(out)["weight"], reference(make_tensor("normal", (40, 30), seed=2))
    )
    again = tmp_path / "m.safetensors"
    with pytest.raises(weightgen.WeightgenError, match="blake3"):
        weightgen.generate("normal", (40, 30), again, manifest=True)
    assert list(tmp_path.iterdir()) == [out]
