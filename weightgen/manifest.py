"""Manifests: how every tensor of a file was made, with its digests.

A manifest is a valid spec (specfile.py) plus, at the top, ``weightgen_manifest`` (the format
version, 2), ``digest`` (the scheme: algorithm and block size, see digest.py),
``created_by`` (weightgen, jax, jaxlib, numpy, python versions), ``environment`` (backend,
PRNG implementation, ``jax_threefry_partitionable``, x64) and ``output`` (format, size, each
file's digest); and per tensor the resolved parameters, dtype, sample dtype and shape, ``key``
(the key data in hex), ``bytes``, ``digest`` and ``blocks`` of its data. ``weightgen run
MANIFEST`` regenerates the same bytes and checks each block as it goes.

Format 1 (weightgen 0.1.0) recorded sha256 per tensor and per file instead; such manifests
are still read, replayed and verified.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import digest
from .plan import Plan, TensorSpec
from .version import __version__

FORMAT_VERSION = 2
FOLDER_MANIFEST = "weightgen.manifest.json"  # a folder output carries its manifest inside


def manifest_path_for(output: str) -> str:
    """Where a file's manifest goes by default: beside it, ``OUTPUT.manifest.json``."""
    return output.rstrip("/") + ".manifest.json"


def locate(target: str | os.PathLike) -> tuple[str, str | None]:
    """(where target's own manifest would be, and that path if it exists): a folder's (or
    its index's) ``weightgen.manifest.json``, else the file's ``FILE.manifest.json``."""
    path = Path(target)
    if path.is_dir() or path.name.endswith(".index.json"):
        where = (path if path.is_dir() else path.parent) / FOLDER_MANIFEST
    else:
        where = Path(manifest_path_for(str(path)))
    return str(where), str(where) if where.is_file() else None


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def spec_entry(spec: TensorSpec, *, own_seed: bool) -> dict:
    """The spec-file entry that makes ``spec`` (every parameter written out)."""
    entry: dict[str, Any] = {
        "init": spec.init.name,
        "shape": list(spec.shape),
        "dtype": spec.dtype.name,
        "sample_dtype": spec.sample_dtype.name,
    }
    if own_seed:
        entry["seed"] = spec.seed
    entry.update({k: _jsonable(v) for k, v in spec.params.items()})
    if spec.transform is not None:
        entry["transform"] = spec.transform.as_json()
    if spec.zero_rows:
        entry["zero_rows"] = list(spec.zero_rows)
    if spec.quant is not None:
        entry["quantize"] = spec.quant.scheme.name
        if spec.quant.fused is not None:
            entry["fused"] = spec.quant.fused
    return entry


def tensor_entry(
    spec: TensorSpec, *, own_seed: bool, key_hex: str, tensor_digest: digest.TensorDigest
) -> dict:
    entry = spec_entry(spec, own_seed=own_seed)
    entry.update({"key": key_hex, "bytes": spec.nbytes, **tensor_digest.as_json()})
    return entry


def environment(*, qr: bool = False) -> tuple[dict, dict]:
    """(created_by, environment) of this process; imports JAX. ``qr``: the run computed a QR
    on CPU, whose bytes depend on the BLAS kernel too: ``blas`` records which (blas.py)."""
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
    if qr and env["backend"] == "cpu":
        from . import blas

        env["blas"] = blas.info()
    return created_by, env


def build(
    plan: Plan,
    *,
    root_seed: int,
    own_seed: Iterable[str],
    keys: Mapping[str, str],
    digests: Mapping[str, digest.TensorDigest],
    output: dict,
    hf_config: dict | None = None,
    recipe: dict | None = None,
    config_defaults: dict | None = None,
) -> dict:
    created_by, env = environment(qr=any(not t.init.elementwise for t in plan.tensors))
    own = set(own_seed)
    document: dict[str, Any] = {
        "weightgen_manifest": FORMAT_VERSION,
        "digest": dict(digest.FORMAT),
        "seed": root_seed,
    }
    if hf_config is not None:
        document["hf_config"] = hf_config
    if recipe is not None:
        document["recipe"] = recipe
    if config_defaults:
        document["config_defaults"] = config_defaults
    tensors: dict[str, dict] = {}
    for t in plan.tensors:
        if t.quant is None:
            tensors[t.name] = tensor_entry(
                t, own_seed=t.name in own, key_hex=keys[t.name], tensor_digest=digests[t.name]
            )
            continue
        # A quantized weight: one entry under its logical name, its parts under "stored".
        logical = t.quant.logical
        entry = tensors.get(logical.name)
        if entry is None:
            document.setdefault("quantize", t.quant.scheme.as_json())
            entry = tensors[logical.name] = {
                **spec_entry(logical, own_seed=logical.name in own or t.name in own),
                "quantize": t.quant.scheme.name,
                **({"fused": t.quant.fused} if t.quant.fused is not None else {}),
                "key": keys[t.name],
                "stored": {},
            }
        entry["stored"][t.name] = {
            "dtype": t.dtype.name,
            "shape": list(t.shape),
            "bytes": t.nbytes,
            **digests[t.name].as_json(),
        }
    document["tensors"] = dict(sorted(tensors.items()))
    document.update({"created_by": created_by, "environment": env, "output": output})
    return document


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
