"""Manifest format 2's digests: blocks that compose, hashed once, checked anywhere.

The scheme is held to the README's few lines of blake3 (conftest.readme_*); pieces hashed
out of order by several writers give the digests of one writer; a single flipped bit anywhere
in a file, header and padding included, is caught by verify, in every format.
"""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
from conftest import readme_digest_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import weightgen
from weightgen import digest
from weightgen.errors import HashMismatchError

SPEC = {
    "seed": 3,
    "tensors": {
        "a": {"init": "normal", "shape": [40, 50]},
        "b": {"init": "zeros", "shape": [7]},
        "c": {"init": "he-uniform", "shape": [3, 3, 8, 4], "dtype": "bfloat16"},
        "d": {"init": "ones", "shape": [0, 4]},
        "e": {"init": "orthogonal", "shape": [16, 16], "dtype": "float16"},
    },
}


def test_digest_of_is_the_readme_scheme():
    rng = np.random.default_rng(0)
    for size in (0, 1, digest.BLOCK_BYTES - 1, digest.BLOCK_BYTES, digest.BLOCK_BYTES + 5):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert digest.digest_of(data) == readme_digest_of(data), size


@settings(max_examples=60, deadline=None)
@given(
    nbytes=st.integers(0, 10_000),
    cuts=st.lists(st.integers(0, 40), max_size=6),
    feed=st.integers(1, 3000),
    order=st.randoms(use_true_random=False),
)
def test_pieces_in_any_order_give_the_digests_of_one_pass(nbytes, cuts, feed, order):
    """Block-aligned pieces, hashed by different writers in any order and fed in chunks of
    any size, compose to exactly what one writer feeding the whole tensor gets."""
    block = 256
    data = np.random.default_rng(nbytes).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    blocks = digest.block_count(nbytes, block)
    edges = sorted({0, blocks, *(min(c, blocks) for c in cuts)})
    pieces = [
        ("t", nbytes, a * block, min(b * block, nbytes)) for a, b in itertools.pairwise(edges)
    ]
    order.shuffle(pieces)
    tap = digest.PieceDigests(pieces, block_bytes=block)
    for number, (_, _, start, stop) in enumerate(pieces):
        for at in range(start, stop, feed):
            tap.update(number, data[at : min(stop, at + feed)])
    parts = digest.assemble({"t": nbytes}, tap.blocks(), block)["t"]
    whole = digest.PieceDigests([("t", nbytes, 0, nbytes)], block_bytes=block)
    whole.update(0, data)
    assert parts == digest.assemble({"t": nbytes}, whole.blocks(), block)["t"]
    assert parts.digest == digest.digest_of(data, block)


def test_a_missing_block_is_an_internal_error_not_a_wrong_digest():
    tap = digest.PieceDigests([("t", 1000, 0, 512)], block_bytes=256)
    tap.update(0, bytes(512))
    with pytest.raises(weightgen.WeightgenError, match="block 2 of tensor 't' was never hashed"):
        digest.assemble({"t": 1000}, tap.blocks(), 256)


def test_a_differing_block_stops_the_tap_naming_it():
    good = [digest.block_digest(bytes(256)), digest.block_digest(bytes(100))]
    tap = digest.PieceDigests(
        [("t", 356, 0, 356)], expected={"t": [good[0], b"x" * 32]}, block_bytes=256
    )
    tap.update(0, bytes(256))
    with pytest.raises(HashMismatchError, match=r"'t'.*block 1 \(bytes 256\.\.356"):
        tap.update(0, bytes(100))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digest")
    spec = folder / "spec.json"
    spec.write_text(json.dumps(SPEC))
    made = {}
    for kind, name, extra in (
        ("safetensors", "m.safetensors", {}),
        ("npz", "m.npz", {}),
        ("hdf5", "m.h5", {}),
        ("folder", "ckpt", {"max_shard_size": 3000}),
    ):
        weightgen.run_spec(str(spec), folder / name, manifest=True, **extra)
        made[kind] = folder / name
    return made


@pytest.mark.parametrize("kind", ["safetensors", "npz", "hdf5", "folder"])
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_a_single_flipped_bit_anywhere_is_caught(outputs, tmp_path_factory, kind, where, bit):
    source = outputs[kind]
    work = tmp_path_factory.mktemp("flip") / source.name
    if source.is_dir():
        shutil.copytree(source, work)
        files = sorted(p for p in work.iterdir() if p.name != "weightgen.manifest.json")
        target = files[int(where * len(files))]
        where = (where * len(files)) % 1
    else:
        shutil.copy(source, work)
        shutil.copy(f"{source}.manifest.json", f"{work}.manifest.json")
        target = work
    data = bytearray(target.read_bytes())
    data[int(where * len(data))] ^= 1 << bit
    target.write_bytes(bytes(data))
    assert weightgen.verify(None, work) != []


@pytest.mark.parametrize("kind", ["safetensors", "npz", "hdf5", "folder"])
def test_untouched_outputs_verify_with_any_number_of_threads(outputs, kind):
    for jobs in (1, 3):
        assert weightgen.verify(None, outputs[kind], jobs=jobs) == []


def test_file_digests_in_the_manifest_cover_every_file(outputs):
    manifest = json.loads((outputs["folder"] / "weightgen.manifest.json").read_text())
    names = [f["name"] for f in manifest["output"]["files"]]
    on_disk = sorted(p.name for p in outputs["folder"].iterdir())
    assert names == [n for n in on_disk if n != "weightgen.manifest.json"]
    assert all(len(f["digest"]) == 64 and "sha256" not in f for f in manifest["output"]["files"])


@pytest.mark.parametrize(
    "change",
    [
        {"output": [1]},
        {"output": "x"},
        {"output": {"format": "safetensors-sharded", "files": 5}},
        {"output": {"format": "safetensors-sharded", "files": [{"name": "n" * 300}]}},
    ],
)
def test_verify_reports_rather_than_crashes_on_an_odd_manifest(outputs, tmp_path, change):
    manifest = json.loads((outputs["folder"] / "weightgen.manifest.json").read_text())
    manifest.update(change)
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(manifest))
    problems = weightgen.verify(str(odd), outputs["folder"])
    assert all(isinstance(p, weightgen.verifier.Problem) for p in problems)


def test_a_weight_file_the_manifest_does_not_know_is_reported(outputs, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(outputs["folder"], folder)
    shutil.copy(outputs["safetensors"], folder / "model.safetensors")  # a loader takes it first
    problems = weightgen.verify(None, folder)
    assert [str(p) for p in problems] == [f"model.safetensors: in {folder} but not in the manifest"]


@pytest.mark.parametrize("size", [4098, 3 << 20, 1 << 30])
def test_block_sizes_must_be_powers_of_two_in_range(outputs, tmp_path, size):
    manifest = json.loads((outputs["folder"] / "weightgen.manifest.json").read_text())
    manifest["digest"]["block_bytes"] = size
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(manifest))
    with pytest.raises(weightgen.UsageError, match="power of two"):
        weightgen.verify(str(odd), outputs["folder"])


def test_a_short_read_is_one_problem_not_a_traceback(outputs, tmp_path, monkeypatch):
    import os

    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: real(fd, n, off)[: max(0, n - 1)])
    problems = weightgen.verify(None, outputs["safetensors"])
    assert problems and all(p.kind == "file" for p in problems)
