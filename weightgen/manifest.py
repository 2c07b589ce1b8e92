"""Manifests: how every tensor of a file was made, with its hash; and ``verify``.

A manifest is a valid spec (specfile.py) plus, at the top, ``weightgen_manifest`` (the format
version), ``created_by`` (weightgen, jax, jaxlib, numpy, python versions), ``environment``
(backend, PRNG implementation, ``jax_threefry_partitionable``, x64) and ``output`` (format,
size, sha256); and per tensor the resolved parameters, dtype, sample dtype and shape, ``key``
(the key data in hex) and ``sha256``/``bytes`` of its data. ``weightgen run MANIFEST``
regenerates the same bytes and checks each hash as it goes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import __version__, formats
from .errors import WeightgenError
from .plan import Plan, TensorSpec

FORMAT_VERSION = 1


def manifest_path_for(output: str) -> str:
    return output.rstrip("/") + ".manifest.json"


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def tensor_entry(spec: TensorSpec, *, own_seed: bool, key_hex: str, sha256: str) -> dict:
    entry: dict[str, Any] = {
        "init": spec.init.name,
        "shape": list(spec.shape),
        "dtype": spec.dtype.name,
        "sample_dtype": spec.sample_dtype.name,
    }
    if own_seed:
        entry["seed"] = spec.seed
    entry.update({k: _jsonable(v) for k, v in spec.params.items()})
    entry.update({"key": key_hex, "bytes": spec.nbytes, "sha256": sha256})
    return entry


def environment() -> tuple[dict, dict]:
    """(created_by, environment) of this process; imports JAX."""
    import jax
    import jaxlib

    created_by = {
        "weightgen": __version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    env = {
        "backend": jax.default_backend(),
        "prng_impl": str(jax.config.jax_default_prng_impl),
        "jax_threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
        "jax_enable_x64": bool(jax.config.jax_enable_x64),
    }
    return created_by, env


def build(
    plan: Plan,
    *,
    root_seed: int,
    own_seed: Iterable[str],
    keys: dict[str, str],
    hashes: dict[str, str],
    output: dict,
) -> dict:
    created_by, env = environment()
    own = set(own_seed)
    return {
        "weightgen_manifest": FORMAT_VERSION,
        "seed": root_seed,
        "tensors": {
            t.name: tensor_entry(
                t, own_seed=t.name in own, key_hex=keys[t.name], sha256=hashes[t.name]
            )
            for t in plan.tensors
        },
        "created_by": created_by,
        "environment": env,
        "output": output,
    }


def dumps(manifest: dict) -> bytes:
    """Indented JSON with one line per tensor: readable, and diffs show which tensor moved."""
    lines = ["{"]
    for i, (key, value) in enumerate(manifest.items()):
        comma = "," if i < len(manifest) - 1 else ""
        if key == "tensors":
            lines.append('  "tensors": {')
            for j, (name, entry) in enumerate(value.items()):
                sep = "," if j < len(value) - 1 else ""
                lines.append(f"    {json.dumps(name)}: {json.dumps(entry)}{sep}")
            lines.append("  }" + comma)
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}{comma}")
    lines.append("}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def provenance(manifest: dict | None) -> str:
    """'made with weightgen 0.1.0, jax 0.10.2 on cpu' from a manifest, for messages."""
    if not manifest:
        return "an unknown setup"
    made = manifest.get("created_by") or {}
    env = manifest.get("environment") or {}
    return (
        f"weightgen {made.get('weightgen', '?')}, jax {made.get('jax', '?')} "
        f"on {env.get('backend', '?')}"
    )


# --- verify ------------------------------------------------------------------------------


@dataclass
class Problem:
    tensor: str
    kind: str  # "differs", "missing", "extra", "shape", "dtype", "file"
    detail: str

    def __str__(self) -> str:
        return f"{self.tensor}: {self.kind}: {self.detail}" if self.tensor else self.detail


def verify(parsed, target: str | os.PathLike) -> list[Problem]:
    """Stream ``target`` and compare every tensor with the manifest ``parsed`` describes.

    When ``target`` has the manifest's output format, its files' sha256 are checked too, so
    a change outside the tensors' data (a header, the metadata) is caught as well.
    """
    if parsed.manifest is None:
        raise WeightgenError("verify needs a manifest (a spec has no hashes to check)")
    try:
        reader = formats.open_reader(target)
    except (WeightgenError, OSError) as exc:
        return [Problem("", "file", f"{target}: {exc}")]
    try:
        problems = _verify_tensors(parsed, reader)
    finally:
        reader.close()
    return problems + _verify_files(parsed.manifest.get("output") or {}, target, problems)


def _verify_files(output: dict, target, problems: list[Problem]) -> list[Problem]:
    """Whole-file hashes, when the file is of the kind the manifest describes."""
    from .atomic import sha256_file
    from .formats.sharded import find_index

    recorded = {
        f.get("name"): f.get("sha256") for f in output.get("files") or [] if isinstance(f, dict)
    }
    fmt = output.get("format")
    if fmt == "safetensors-sharded":
        index = find_index(target)
        if index is None:
            return []
        found = []
        for name, want in recorded.items():
            path = index.parent / str(name)
            if "/" in str(name) or not path.is_file():
                found.append(Problem("", "file", f"{name}: missing from {index.parent}"))
            elif sha256_file(path) != want:
                found.append(Problem("", "file", f"{name}: file bytes differ from the manifest"))
        return found
    if fmt != formats.sniff(target) or len(recorded) != 1 or problems:
        return []
    (want,) = recorded.values()
    if sha256_file(target) != want:
        return [
            Problem(
                "", "file", f"{target}: bytes outside the tensors' data differ (header or metadata)"
            )
        ]
    return []


def _verify_tensors(parsed, reader) -> list[Problem]:
    expected = {t.name: t for t in parsed.plan.tensors}
    present = {e.name: e for e in reader.entries}
    problems = [Problem(n, "missing", "not in the file") for n in expected if n not in present]
    problems += [Problem(n, "extra", "not in the manifest") for n in present if n not in expected]
    for name, spec in expected.items():
        entry = present.get(name)
        if entry is None:
            continue
        if tuple(entry.shape) != spec.shape:
            problems.append(
                Problem(
                    name,
                    "shape",
                    f"{list(entry.shape)} in the file, {list(spec.shape)} expected",
                )
            )
            continue
        if entry.dtype.name != spec.dtype.name:
            problems.append(
                Problem(
                    name, "dtype", f"{entry.dtype.name} in the file, {spec.dtype.name} expected"
                )
            )
            continue
        digest = hashlib.sha256()
        try:
            for chunk in reader.iter_chunks(entry):
                digest.update(np.ascontiguousarray(chunk).reshape(-1).view(np.uint8))
        except (WeightgenError, OSError) as exc:
            problems.append(Problem(name, "file", str(exc)))
            continue
        if digest.hexdigest() != parsed.expected_sha256[name]:
            problems.append(
                Problem(
                    name,
                    "differs",
                    f"sha256 {digest.hexdigest()[:16]}..., manifest "
                    f"{parsed.expected_sha256[name][:16]}...",
                )
            )
    return problems
