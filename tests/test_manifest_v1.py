"""Manifests written by weightgen 0.1.0 (format 1: sha256 per tensor and per file) still
replay and verify. The fixtures are real 0.1.0 manifests (tests/fixtures/manifest_v1, made
from spec.json there); the 0.1.0 files themselves are rebuilt here byte for byte, by writing
with 0.1.0's file metadata, and checked against the sha256 those manifests recorded.

What is portable is held exactly: every elementwise tensor's bytes, on any host. The QR
tensor (``rnn.kernel``, orthogonal) depends on the host's BLAS kernel (blas.py): it is held to
JAX on this host, to the recorded values within rounding (``accept_qr_drift`` regenerates them
under the OpenBLAS kernels this host runs until one reproduces the recorded sha256), and to
orthogonality; the whole file's sha256 only where this host's kernel reproduces it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import weightgen
from weightgen.errors import HashMismatchError

FIXTURES = Path(__file__).parent / "fixtures" / "manifest_v1"
OLD_METADATA = {"generator": "weightgen", "weightgen_version": "0.1.0"}
CASES = {
    "model.safetensors.manifest.json": "m.safetensors",
    "model.npz.manifest.json": "m.npz",
    "model.h5.manifest.json": "m.h5",
    "k.manifest.json": "k.safetensors",
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def old_files(monkeypatch):
    """Write as 0.1.0 did: no "format" tag in the metadata."""
    monkeypatch.setattr("weightgen.output.file_metadata", lambda fmt="safetensors": OLD_METADATA)


QR_TENSORS = {"rnn.kernel"}


def _replay(source: str, out: Path, **options) -> list[str]:
    """Replay, accepting QR drift once checked; the names of the QR tensors that drifted."""
    result = weightgen.run_spec(source, out, accept_qr_drift=True, **options)
    return sorted(
        n for n in QR_TENSORS if any(note.startswith(f"note: {n}:") for note in result.notes)
    )


def _held_to_the_record(path: Path, recorded: dict) -> None:
    """Elementwise tensors: the recorded bytes. QR tensors: JAX's on this host."""
    import jax

    loaded = weightgen.load(path)
    assert set(loaded) == set(recorded["tensors"])
    for name, values in loaded.items():
        if name in QR_TENSORS:
            entry = recorded["tensors"][name]
            want = jax.nn.initializers.orthogonal()(
                jax.random.key(entry["seed"]), tuple(entry["shape"]), jax.numpy.float32
            ).astype(values.dtype)
            assert values.tobytes() == np.asarray(want).tobytes(), name
        else:
            got = hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()
            assert got == recorded["tensors"][name]["sha256"], name


@pytest.mark.parametrize("manifest", sorted(CASES))
def test_v1_manifest_replays_to_the_bytes_it_recorded(tmp_path, old_files, manifest):
    out = tmp_path / CASES[manifest]
    drifted = _replay(str(FIXTURES / manifest), out)
    recorded = json.loads((FIXTURES / manifest).read_text())
    assert recorded["weightgen_manifest"] == 1
    _held_to_the_record(out, recorded)
    problems = weightgen.verify(str(FIXTURES / manifest), out)
    if not drifted:  # this host's BLAS kernel gives the recorded QR bytes: the 0.1.0 file
        assert _sha256(out) == recorded["output"]["files"][0]["sha256"]
        assert problems == []
    else:  # only the QR tensor differs, and verify says why in one more line
        assert [(p.tensor, p.kind) for p in problems] == [("rnn.kernel", "differs"), ("", "blas")]


def test_v1_sharded_manifest_replays_and_verifies(tmp_path, old_files):
    folder = tmp_path / "ckpt"
    manifest = str(FIXTURES / "ckpt.manifest.json")
    drifted = _replay(manifest, folder, max_shard_size=8000)
    recorded = json.loads(Path(manifest).read_text())["output"]["files"]
    got = {p.name: _sha256(p) for p in folder.iterdir()}
    assert set(got) == {f["name"] for f in recorded}
    weightmap = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    drifted_files = {weightmap[n] for n in drifted}
    for f in recorded:  # every shard without a drifted QR tensor is the 0.1.0 file exactly
        if f["name"] not in drifted_files:
            assert got[f["name"]] == f["sha256"], f["name"]
    baseline = weightgen.verify(manifest, folder)
    assert [p.tensor for p in baseline if p.kind == "differs"] == drifted
    shard = folder / recorded[0]["name"]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x01
    shard.write_bytes(bytes(data))
    problems = weightgen.verify(manifest, folder)
    new = [p.kind for p in problems if p.tensor not in drifted and p.kind != "blas"]
    assert new == ["differs"]


def test_v1_flipped_bits_are_caught(tmp_path, old_files):
    manifest = str(FIXTURES / "model.safetensors.manifest.json")
    out = tmp_path / "m.safetensors"
    drifted = _replay(manifest, out)
    original = out.read_bytes()
    header_end = 8 + int.from_bytes(original[:8], "little")
    head_end = json.loads(original[8:header_end])["head"]["data_offsets"][1]  # not a QR tensor
    for position, kind in ((header_end + head_end - 5, "differs"), (header_end - 40, "file")):
        data = bytearray(original)
        data[position] ^= 0x04
        out.write_bytes(bytes(data))
        problems = weightgen.verify(manifest, out)
        found = [p for p in problems if p.tensor not in drifted and p.kind != "blas"]
        assert len(found) == 1 and found[0].kind == kind, (position, problems)


def test_v1_replay_still_checks_sha256(tmp_path):
    document = json.loads((FIXTURES / "model.npz.manifest.json").read_text())
    document["tensors"]["head"]["sha256"] = "0" * 64
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    with pytest.raises(HashMismatchError, match="'head' differs from the manifest"):
        weightgen.run_spec(str(tampered), tmp_path / "replay.npz")
    assert not (tmp_path / "replay.npz").exists()


def test_v1_replay_writes_a_format_2_manifest(tmp_path):
    out = tmp_path / "again.safetensors"
    _replay(str(FIXTURES / "model.safetensors.manifest.json"), out, manifest=True)
    new = json.loads(Path(str(out) + ".manifest.json").read_text())
    assert new["weightgen_manifest"] == 2
    assert weightgen.verify(None, out) == []
