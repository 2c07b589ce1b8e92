"""QR tensors and the host's BLAS: jaxlib's CPU QR runs in the OpenBLAS scipy ships, whose
kernel (per CPU, or per OPENBLAS_CORETYPE) changes the float32 bytes of ``orthogonal``. The
kernels are chosen here in real child processes, so the difference can never again surprise
CI: each kernel's bytes equal JAX's under that kernel, a manifest records the kernel, and a
replay under another kernel says so in one line, or checks and accepts with
``--accept-qr-drift``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

import weightgen
from weightgen import blas, digest
from weightgen.errors import HashMismatchError, QRDriftError

TIMEOUT = 240
KERNELS = ("Haswell", "Sandybridge")  # both run on any AVX2 host; their 32x32 QRs differ
SPEC = {
    "seed": 7,
    "tensors": {
        "embed": {"init": "normal", "shape": [64, 16], "stddev": 0.02},
        "rnn.kernel": {"init": "orthogonal", "shape": [32, 32], "seed": 99, "dtype": "bfloat16"},
        "square": {"init": "orthogonal", "shape": [64, 64], "seed": 5},
    },
}

needs_openblas_x86 = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64") or blas.info()["library"] != "openblas",
    reason="OPENBLAS_CORETYPE names x86-64 kernels of OpenBLAS",
)

_CHILD = """
import hashlib, json, sys
import jax, numpy as np
import weightgen
from weightgen import blas
from weightgen.specfile import parse_spec
want = jax.nn.initializers.orthogonal()(jax.random.key(99), (32, 32), jax.numpy.float32)
q = {"init": "orthogonal", "shape": [32, 32], "seed": 99}
plan = parse_spec({"tensors": {"q": q}}).plan
weightgen.write(plan, sys.argv[1])
got = weightgen.load(sys.argv[1])["q"]
print(json.dumps({"kernel": blas.info()["kernel"],
                  "jax": hashlib.sha256(np.asarray(want).tobytes()).hexdigest(),
                  "weightgen": hashlib.sha256(got.tobytes()).hexdigest()}))
"""


def _env(kernel: str) -> dict:
    return {
        **os.environ,
        blas.CORETYPE_VARIABLE: kernel,
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }


def _child(args: list[str], kernel: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        env=_env(kernel),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        start_new_session=True,
        **kwargs,
    )


@needs_openblas_x86
def test_each_kernel_gives_jax_own_bytes_and_the_kernels_differ(tmp_path):
    found = {}
    for kernel in KERNELS:
        proc = _child(["-c", _CHILD, str(tmp_path / f"{kernel}.safetensors")], kernel)
        assert proc.returncode == 0, proc.stderr[-2000:]
        found[kernel] = json.loads(proc.stdout.strip().splitlines()[-1])
        assert found[kernel]["kernel"] == kernel  # blas.info() names the kernel in use
        assert found[kernel]["weightgen"] == found[kernel]["jax"]  # parity under each kernel
    # The reason QR bytes are host-dependent: the same JAX call, two kernels, two results.
    assert found["Haswell"]["jax"] != found["Sandybridge"]["jax"]


def _run(tmp_path, args: list[str], kernel: str) -> subprocess.CompletedProcess:
    return _child(["-m", "weightgen", *args], kernel, cwd=tmp_path)


@needs_openblas_x86
def test_a_replay_under_another_kernel_explains_then_accepts(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    made = _run(tmp_path, ["run", "spec.json", "-o", "a.safetensors", "-q"], "Sandybridge")
    assert made.returncode == 0, made.stderr
    manifest = json.loads((tmp_path / "a.safetensors.manifest.json").read_text())
    recorded = manifest["environment"]["blas"]
    assert recorded["library"] == "openblas" and recorded["kernel"] == "Sandybridge"
    assert "Sandybridge" in recorded["config"]

    refused = _run(
        tmp_path, ["run", "a.safetensors.manifest.json", "-o", "b.safetensors"], "Haswell"
    )
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weightgen: error: only QR tensors differ")
    for part in ("'square'", "kernel Sandybridge", "kernel Haswell", "--accept-qr-drift"):
        assert part in lines[0], part
    assert "Traceback" not in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.safetensors",
        "a.safetensors.manifest.json",
        "spec.json",
    ]

    accepted = _run(
        tmp_path,
        ["run", "a.safetensors.manifest.json", "-o", "b.safetensors", "--accept-qr-drift"],
        "Haswell",
    )
    assert accepted.returncode == 0, accepted.stderr
    assert "note: square: the recorded bytes are OpenBLAS kernel Sandybridge's" in accepted.stderr
    again = json.loads((tmp_path / "b.safetensors.manifest.json").read_text())
    assert again["environment"]["blas"]["kernel"] == "Haswell"
    assert again["tensors"]["embed"]["digest"] == manifest["tensors"]["embed"]["digest"]
    assert again["tensors"]["square"]["digest"] != manifest["tensors"]["square"]["digest"]
    # The new folder verifies against its own manifest; against the old one, verify says why.
    assert _run(tmp_path, ["verify", "b.safetensors"], "Haswell").returncode == 0
    old = _run(tmp_path, ["verify", "a.safetensors.manifest.json", "b.safetensors"], "Haswell")
    assert old.returncode == 1
    assert "only QR tensors differ" in old.stderr.splitlines()[-1]
    assert "kernel Sandybridge" in old.stderr.splitlines()[-1]


@pytest.mark.slow
@needs_openblas_x86
def test_accepting_refuses_what_no_kernel_reproduces(tmp_path):
    """A recorded QR digest no kernel gives (here: tampered) cannot be checked: refused."""
    out = tmp_path / "a.safetensors"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    weightgen.run_spec(str(spec), out, manifest=True)
    manifest = json.loads((tmp_path / "a.safetensors.manifest.json").read_text())
    entry = manifest["tensors"]["square"]
    entry["blocks"] = ["00" * 32]
    entry["digest"] = digest.compose([bytes(32)]).hex()
    manifest["environment"].pop("blas")  # as a format 1 manifest: try every kernel
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(manifest))
    with pytest.raises(QRDriftError, match="no OpenBLAS kernel this host runs reproduces"):
        weightgen.run_spec(str(tampered), tmp_path / "b.safetensors", accept_qr_drift=True)
    assert not (tmp_path / "b.safetensors").exists()


def test_an_elementwise_difference_is_not_blamed_on_the_blas(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    weightgen.run_spec(str(spec), tmp_path / "a.safetensors", manifest=True)
    manifest = json.loads((tmp_path / "a.safetensors.manifest.json").read_text())
    for name in ("embed", "square"):  # one elementwise and one QR tensor differ
        manifest["tensors"][name]["blocks"] = ["00" * 32]
        manifest["tensors"][name]["digest"] = digest.compose([bytes(32)]).hex()
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(manifest))
    with pytest.raises(HashMismatchError) as caught:
        weightgen.run_spec(str(tampered), tmp_path / "b.safetensors", accept_qr_drift=True)
    assert not isinstance(caught.value, QRDriftError)
    assert "'embed' differs from the manifest" in str(caught.value)
    problems = weightgen.verify(str(tampered), tmp_path / "a.safetensors")
    assert {p.tensor for p in problems if p.kind == "differs"} == {"embed", "square"}
    assert not [p for p in problems if p.kind == "blas"]


def test_qr_differences_alone_get_one_line_from_verify(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    weightgen.run_spec(str(spec), tmp_path / "a.safetensors", manifest=True)
    manifest = json.loads((tmp_path / "a.safetensors.manifest.json").read_text())
    manifest["tensors"]["square"]["blocks"] = ["00" * 32]
    manifest["tensors"]["square"]["digest"] = digest.compose([bytes(32)]).hex()
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(manifest))
    # Recorded with this host's own kernel, the BLAS cannot be the cause: no such line.
    problems = weightgen.verify(str(tampered), tmp_path / "a.safetensors")
    assert [(p.tensor, p.kind) for p in problems] == [("square", "differs")]
    with pytest.raises(QRDriftError, match="although this host's BLAS is the one recorded"):
        weightgen.run_spec(str(tampered), tmp_path / "b.safetensors")
    # Recorded with another kernel (as on another host): one line says so.
    manifest["environment"]["blas"] = {**manifest["environment"]["blas"], "kernel": "Elsewhere"}
    tampered.write_text(json.dumps(manifest))
    problems = weightgen.verify(str(tampered), tmp_path / "a.safetensors")
    assert [(p.tensor, p.kind) for p in problems] == [("square", "differs"), ("", "blas")]
    assert blas.describe(manifest["environment"]["blas"]) in problems[-1].detail
    with pytest.raises(QRDriftError, match=r"only QR tensors differ .*'square'.*kernel"):
        weightgen.run_spec(str(tampered), tmp_path / "b.safetensors")
    assert not (tmp_path / "b.safetensors").exists()


def test_manifests_without_qr_tensors_record_no_blas(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"tensors": {"w": {"init": "normal", "shape": [8, 8]}}}))
    weightgen.run_spec(str(spec), tmp_path / "w.safetensors", manifest=True)
    manifest = json.loads((tmp_path / "w.safetensors.manifest.json").read_text())
    assert "blas" not in manifest["environment"]


def test_the_accepting_bounds_hold_rounding_and_refuse_more():
    """qrdrift's check on known values: a neighbouring kernel's rounding passes; a value moved
    by more than rounding, or a matrix no longer orthogonal, does not."""
    import jax
    import numpy as np

    from weightgen import qrdrift
    from weightgen.specfile import parse_spec

    entry = {"init": "orthogonal", "shape": [48, 32], "column_axis": 0, "scale": 2.0, "seed": 1}
    spec = parse_spec({"tensors": {"q": entry}}).plan.tensors[0]
    q = np.asarray(jax.nn.initializers.orthogonal(2.0, column_axis=0)(jax.random.key(1), (48, 32)))
    nudged = np.nextafter(q, np.float32(np.inf))  # one float32 step everywhere: rounding
    ok = qrdrift._compare(spec, nudged, "K", q)
    assert ok.differing == q.size and ok.largest <= ok.bound
    assert ok.orthogonality <= ok.orthogonality_bound
    moved = q.copy()
    moved[3, 5] += 1e-3 * np.abs(q).max()
    bad = qrdrift._compare(spec, moved, "K", q)
    assert bad.differing == 1 and bad.largest > bad.bound
    stretched = qrdrift._compare(spec, q * 1.001, "K", q * 1.001)  # same values, not orthogonal
    assert stretched.largest == 0 and stretched.orthogonality > stretched.orthogonality_bound


def test_accepting_drift_is_refused_where_nothing_can_be_taken_back(tmp_path):
    """stdout cannot be taken back, and each of many processes would replay alone."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    weightgen.run_spec(str(spec), tmp_path / "a.safetensors", manifest=True)
    manifest = str(tmp_path / "a.safetensors.manifest.json")
    with pytest.raises(weightgen.UsageError, match="one process into a file or folder"):
        weightgen.run_spec(manifest, "-", format="safetensors", accept_qr_drift=True)
    cluster = weightgen.Cluster("127.0.0.1:1", 2, 0)
    with pytest.raises(weightgen.UsageError, match="one process into a file or folder"):
        weightgen.run_spec(
            manifest, tmp_path / "b.safetensors", cluster=cluster, accept_qr_drift=True
        )
