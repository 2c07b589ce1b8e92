"""QR tensors a manifest recorded with another BLAS kernel: explain the difference, or check
it and accept it (``run MANIFEST --accept-qr-drift``).

A manifest holds digests, not values, so "differs only within rounding" is checked against
the recorded values themselves: they are regenerated in a child process under the OpenBLAS
kernel the manifest recorded (``OPENBLAS_CORETYPE``; for a manifest that recorded none, each
kernel this host can run, in turn) until a child reproduces the recorded digests. Then this
host's values must be within QR's float rounding of them, after storing in the tensor's
dtype, and orthogonal within the stored dtype's precision.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from . import blas, digest
from .errors import QRDriftError, WeightgenError
from .plan import TensorSpec

# A QR's float32 result moves by up to ~350 eps x max|Q| between OpenBLAS kernels for a
# 512x512 matrix (measured: Haswell against SkylakeX and Sandybridge, 32x32 to 2048x2048);
# the bound allows 4 k eps for k = min(rows, columns).
QR_EPS_FACTOR = 4


def explain(exc: QRDriftError, manifest: dict | None) -> str:
    """The one line for a replay whose only differences are QR tensors."""
    recorded = ((manifest or {}).get("environment") or {}).get("blas")
    here = blas.info()
    if recorded and blas.same_kernel(recorded, here):
        cause = (
            f"although this host's BLAS is the one recorded ({blas.describe(here)}): "
            "the JAX or jaxlib build differs"
        )
    else:
        cause = (
            "their bytes depend on the BLAS kernel that computed them "
            f"(the manifest's: {blas.describe(recorded)}; this host's: {blas.describe(here)})"
        )
    return (
        f"{exc}: {cause}; run again with --accept-qr-drift (library: accept_qr_drift=True) to "
        "check them against the recorded values and accept them within rounding; nothing "
        "was written"
    )


@dataclass
class Checked:
    name: str
    kernel: str  # the OpenBLAS kernel that reproduced the recorded bytes
    differing: int  # elements that differ
    numel: int
    largest: float  # largest absolute difference
    bound: float
    orthogonality: float  # max |Q^T Q / scale^2 - I| of this host's stored values
    orthogonality_bound: float

    def __str__(self) -> str:
        return (
            f"note: {self.name}: the recorded bytes are OpenBLAS kernel {self.kernel}'s; "
            f"this host's differ in {self.differing} of {self.numel} elements, by at most "
            f"{self.largest:.3g} (bound {self.bound:.3g}); orthogonal within "
            f"{self.orthogonality:.3g} (bound {self.orthogonality_bound:.3g}); accepted, "
            "with this host's digest in the new manifest"
        )


def check(parsed, names: Sequence[str]) -> list[Checked]:
    """Each QR tensor ``names`` of the manifest ``parsed``, this host's values against the
    recorded ones; raises ``QRDriftError`` (nothing accepted) unless every one is within
    the bounds."""
    specs = {t.name: t for t in parsed.plan.tensors if t.name in set(names)}
    recorded_blas = (parsed.manifest.get("environment") or {}).get("blas")
    here_kernel = blas.info().get("kernel")
    with tempfile.TemporaryDirectory(prefix="weightgen-qr-") as tmp:
        spec_path = os.path.join(tmp, "qr.json")
        with open(spec_path, "w", encoding="utf-8") as f:
            json.dump(_mini_spec(parsed, specs.values()), f)
        here = _draw_here(list(specs.values()), os.path.join(tmp, "here.safetensors"))
        recorded: dict[str, tuple[str, np.ndarray]] = {}
        tried = []
        for kernel in _candidates(recorded_blas, here_kernel):
            if len(recorded) == len(specs):
                break
            tried.append(kernel)
            try:
                drawn = _draw(spec_path, os.path.join(tmp, f"{kernel}.safetensors"), kernel)
            except WeightgenError:
                continue  # a kernel this CPU cannot run
            for name, values in drawn.items():
                if name not in recorded and _matches(parsed, specs[name], values):
                    recorded[name] = (kernel, values)
    missing = [n for n in specs if n not in recorded]
    if missing:
        raise QRDriftError(
            f"QR tensor {missing[0]!r} differs from the manifest and no OpenBLAS kernel this "
            f"host runs reproduces the recorded bytes (tried {', '.join(tried) or 'none'}), so "
            "the difference cannot be checked; nothing was written",
            missing,
        )
    results = [_compare(specs[n], here[n], *recorded[n]) for n in specs]
    bad = [r for r in results if r.largest > r.bound or r.orthogonality > r.orthogonality_bound]
    if bad:
        r = bad[0]
        raise QRDriftError(
            f"QR tensor {r.name!r} differs from the recorded values (OpenBLAS kernel "
            f"{r.kernel}) by {r.largest:.3g}, beyond rounding ({r.bound:.3g}), or is not "
            f"orthogonal ({r.orthogonality:.3g}, bound {r.orthogonality_bound:.3g}); nothing "
            "was written",
            [b.name for b in bad],
        )
    return results


def _candidates(recorded: dict | None, here_kernel: str | None) -> list[str]:
    if recorded and recorded.get("library") == "openblas" and recorded.get("kernel"):
        return [recorded["kernel"]]
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    return [k for k in blas.PORTABLE_X86_CORES if k != here_kernel]


def _mini_spec(parsed, specs) -> dict:
    from .manifest import spec_entry

    return {
        "seed": parsed.root_seed,
        "tensors": {t.name: spec_entry(t, own_seed=t.name in parsed.own_seed) for t in specs},
    }


def _draw_here(specs: list[TensorSpec], out: str) -> dict[str, np.ndarray]:
    """The tensors as this process draws them (this host's BLAS kernel)."""
    from .api import load, write
    from .plan import Plan

    write(Plan.of(specs), out)
    return load(out)


def _draw(spec_path: str, out: str, kernel: str) -> dict[str, np.ndarray]:
    """The spec's tensors, generated by a child weightgen under OpenBLAS ``kernel``."""
    from .api import load

    env = {**os.environ, blas.CORETYPE_VARIABLE: kernel}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    command = [sys.executable, "-m", "weightgen", "run", spec_path, "-o", out]
    proc = subprocess.run(
        [*command, "--no-manifest", "-q"], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise WeightgenError(f"kernel {kernel}: {proc.stderr.strip()[-300:]}")
    return load(out)


def _matches(parsed, spec: TensorSpec, values: np.ndarray) -> bool:
    data = np.ascontiguousarray(values).tobytes()
    if parsed.version < 2:
        return hashlib.sha256(data).hexdigest() == parsed.expected_sha256.get(spec.name)
    block = parsed.block_bytes or digest.BLOCK_BYTES
    blocks = [digest.block_digest(data[i : i + block]) for i in range(0, len(data), block)]
    return blocks == list(parsed.expected_blocks.get(spec.name, []))


def _matrix(spec: TensorSpec, values: np.ndarray) -> tuple[np.ndarray, float]:
    """The orthogonal matrix a tensor holds (delta-orthogonal: its centre tap), and its scale."""
    args = spec.init.family_args(spec.params)
    x = values.astype(np.float64)
    if spec.init.family == "delta_orthogonal":
        centre = tuple(s // 2 for s in x.shape[:-2])
        x = x[centre]
    columns = x.shape[args["column_axis"]]
    matrix = np.moveaxis(x, args["column_axis"], -1).reshape(-1, columns)
    return matrix, abs(float(args["scale"]))


def _compare(spec: TensorSpec, here: np.ndarray, kernel: str, recorded: np.ndarray) -> Checked:
    a, b = here.astype(np.float64), recorded.astype(np.float64)
    matrix, scale = _matrix(spec, here)
    k = min(matrix.shape) if matrix.size else 0
    top = float(np.abs(b).max()) if b.size else 0.0
    stored, sample = ml_dtypes.finfo(spec.dtype.numpy), ml_dtypes.finfo(spec.sample_dtype.numpy)
    step = 2.0 ** (math.floor(math.log2(top)) - stored.nmant) if top else 0.0  # one stored ulp
    bound = step + QR_EPS_FACTOR * k * float(sample.eps) * top
    if matrix.shape[0] < matrix.shape[1]:
        matrix = matrix.T
    gram = matrix.T @ matrix / (scale * scale) if scale and k else np.zeros((0, 0))
    orthogonality = float(np.abs(gram - np.eye(len(gram))).max()) if gram.size else 0.0
    orthogonality_bound = 2 * float(stored.eps) + QR_EPS_FACTOR * k * float(sample.eps)
    difference = np.abs(a - b)
    return Checked(
        spec.name,
        kernel,
        int(np.count_nonzero(difference)),
        int(a.size),
        float(difference.max()) if a.size else 0.0,
        bound,
        orthogonality,
        orthogonality_bound,
    )
