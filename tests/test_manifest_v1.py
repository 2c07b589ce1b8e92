"""Manifests written by weightgen 0.1.0 (format 1: sha256 per tensor and per file) still
replay and verify. The fixtures are real 0.1.0 manifests (tests/fixtures/manifest_v1, made
from spec.json there); the 0.1.0 files themselves are rebuilt here byte for byte, by writing
with 0.1.0's file metadata, and checked against the sha256 those manifests recorded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

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


@pytest.mark.parametrize("manifest", sorted(CASES))
def test_v1_manifest_replays_to_the_bytes_it_recorded(tmp_path, old_files, manifest):
    out = tmp_path / CASES[manifest]
    weightgen.run_spec(str(FIXTURES / manifest), out)
    recorded = json.loads((FIXTURES / manifest).read_text())
    assert recorded["weightgen_manifest"] == 1
    assert _sha256(out) == recorded["output"]["files"][0]["sha256"]  # the 0.1.0 file, exactly
    assert weightgen.verify(str(FIXTURES / manifest), out) == []


def test_v1_sharded_manifest_replays_and_verifies(tmp_path, old_files):
    folder = tmp_path / "ckpt"
    manifest = str(FIXTURES / "ckpt.manifest.json")
    weightgen.run_spec(manifest, folder, max_shard_size=8000)
    recorded = json.loads(Path(manifest).read_text())["output"]["files"]
    assert {f["name"]: f["sha256"] for f in recorded} == {
        p.name: _sha256(p) for p in folder.iterdir()
    }
    assert weightgen.verify(manifest, folder) == []
    shard = folder / recorded[0]["name"]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x01
    shard.write_bytes(bytes(data))
    problems = weightgen.verify(manifest, folder)
    assert [p.kind for p in problems] == ["differs"]


def test_v1_flipped_bits_are_caught(tmp_path, old_files):
    manifest = str(FIXTURES / "model.safetensors.manifest.json")
    out = tmp_path / "m.safetensors"
    weightgen.run_spec(manifest, out)
    original = out.read_bytes()
    header_end = 8 + int.from_bytes(original[:8], "little")
    for position, kind in ((len(original) - 5, "differs"), (header_end - 40, "file")):
        data = bytearray(original)
        data[position] ^= 0x04
        out.write_bytes(bytes(data))
        problems = weightgen.verify(manifest, out)
        assert len(problems) == 1 and problems[0].kind == kind, (position, problems)


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
    weightgen.run_spec(str(FIXTURES / "model.safetensors.manifest.json"), out, manifest=True)
    new = json.loads(Path(str(out) + ".manifest.json").read_text())
    assert new["weightgen_manifest"] == 2
    assert weightgen.verify(None, out) == []
