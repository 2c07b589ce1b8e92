"""Spec files (JSON or TOML): a whole model's tensors, written down once.

::

    {"seed": 7, "dtype": "float32",
     "tensors": {
       "embed.weight": {"init": "normal", "shape": [1000, 64], "stddev": 0.02},
       "rnn.kernel": {"init": "orthogonal", "shape": [128, 128], "seed": 99}}}

Each tensor names its initializer (CLI names and aliases), its shape and optionally its
``dtype``, ``sample_dtype`` and ``seed``; initializer parameters sit beside them under JAX's
argument names. Top-level ``seed``, ``dtype`` and ``sample_dtype`` are defaults.

The key rule: a tensor with its own ``seed`` uses ``jax.random.key(seed)``; the others use
``jax.random.fold_in(jax.random.key(root_seed), name_fold_in(name))``, so adding, removing or
reordering tensors never changes another tensor's bytes.

A manifest (manifest.py) is a spec with more keys; this parser reads both, and returns what
the manifest expects (hashes, keys) beside the plan. Spec files are untrusted input: size,
nesting, duplicate keys, NaN and unknown keys are all refused with a message naming them.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import initializers, strictjson
from .errors import UsageError
from .plan import Plan, check_name, make_tensor, name_fold_in, parse_seed

MAX_SPEC_BYTES = 16 << 20
MAX_TENSORS = 100_000

TENSOR_KEYS = ("init", "shape", "dtype", "sample_dtype", "seed")
MANIFEST_TENSOR_KEYS = ("key", "sha256", "bytes")
TOP_KEYS = ("seed", "dtype", "sample_dtype", "tensors")
MANIFEST_TOP_KEYS = ("weightgen_manifest", "created_by", "environment", "output")


@dataclass
class ParsedSpec:
    plan: Plan
    root_seed: int
    own_seed: set[str]  # tensors that carry their own seed
    expected_sha256: dict[str, str] = field(default_factory=dict)  # from a manifest
    expected_key: dict[str, str] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None  # the whole document, when it is a manifest


def read_text(source: str) -> tuple[str, str]:
    """(text, kind) from a path or ``-`` (stdin); kind is "toml" or "json"."""
    try:
        if source == "-":
            raw = sys.stdin.buffer.read(MAX_SPEC_BYTES + 1)
        else:
            with open(source, "rb") as f:
                raw = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read spec {source}: {exc.strerror}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise UsageError(f"spec {source} is larger than {MAX_SPEC_BYTES >> 20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"spec {source} is not UTF-8 text") from None
    kind = "toml" if source.lower().endswith(".toml") else "json"
    if source == "-" and not text.lstrip().startswith(("{", "[")):
        kind = "toml"
    return text, kind


def parse_document(text: str, kind: str) -> dict:
    # Count before parsing: a spec holds about one table per tensor and a few lists each, so
    # a document with far more is refused in milliseconds instead of parsed for seconds.
    if text.count("{") > MAX_TENSORS + 64 or text.count("[") > 8 * MAX_TENSORS + 64:
        raise UsageError(f"spec: too many tables or lists (at most {MAX_TENSORS} tensors)")
    if kind == "json":
        document = strictjson.loads(text, error=UsageError, what="spec")
    else:
        try:
            document = tomllib.loads(text)
        except RecursionError:
            raise UsageError("spec: nested too deeply") from None
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"spec: not valid TOML: {exc}") from None
    if not isinstance(document, dict):
        raise UsageError("spec: the top level must be an object with a 'tensors' table")
    return document


def load_spec(source: str) -> ParsedSpec:
    """Read and validate a spec or manifest from a path or ``-``."""
    text, kind = read_text(source)
    return parse_spec(parse_document(text, kind))


def parse_spec(document: Mapping[str, Any]) -> ParsedSpec:
    is_manifest = "weightgen_manifest" in document
    allowed = TOP_KEYS + (MANIFEST_TOP_KEYS if is_manifest else ())
    unknown = [k for k in document if k not in allowed]
    if unknown:
        raise UsageError(
            f"spec: unknown top-level key {unknown[0]!r} (allowed: {', '.join(TOP_KEYS)})"
        )
    root_seed = parse_seed(document.get("seed", 0), label="spec: seed")
    defaults = {k: document[k] for k in ("dtype", "sample_dtype") if document.get(k) is not None}
    for key, value in defaults.items():
        if not isinstance(value, str):
            raise UsageError(f"spec: {key} must be a string, got {value!r}")
    tensors = document.get("tensors")
    if not isinstance(tensors, dict) or not tensors:
        raise UsageError("spec: 'tensors' must be a non-empty table of name -> tensor")
    if len(tensors) > MAX_TENSORS:
        raise UsageError(f"spec: more than {MAX_TENSORS} tensors")

    specs, own_seed, sha256, keys = [], set(), {}, {}
    for name, entry in tensors.items():
        where = f"tensor {name!r}: "
        check_name(name, label="spec: tensor name")
        if not isinstance(entry, dict):
            raise UsageError(f"{where}expected a table with 'init' and 'shape'")
        for required in ("init", "shape"):
            if required not in entry:
                raise UsageError(f"{where}missing {required!r}")
        if not isinstance(entry["init"], str):
            raise UsageError(f"{where}'init' must be an initializer name")
        init = initializers.lookup(entry["init"])
        accepted = {p.name for p in init.params}
        extra = MANIFEST_TENSOR_KEYS if is_manifest else ()
        for key in entry:
            if key not in TENSOR_KEYS and key not in accepted and key not in extra:
                raise UsageError(
                    f"{where}unknown key {key!r} ({init.name} accepts: "
                    f"{', '.join(sorted(accepted)) or 'no parameters'}; any tensor: "
                    f"{', '.join(TENSOR_KEYS)})"
                )
        for key in ("dtype", "sample_dtype"):
            if key in entry and not isinstance(entry[key], str):
                raise UsageError(f"{where}{key} must be a string, got {entry[key]!r}")
        if "seed" in entry:
            seed, fold_in = parse_seed(entry["seed"], label=f"{where}seed"), None
            own_seed.add(name)
        else:
            seed, fold_in = root_seed, name_fold_in(name)
        specs.append(
            make_tensor(
                init,
                entry["shape"],
                params={k: v for k, v in entry.items() if k in accepted},
                dtype=entry.get("dtype", defaults.get("dtype", "float32")),
                sample_dtype=entry.get("sample_dtype", defaults.get("sample_dtype")),
                seed=seed,
                fold_in=fold_in,
                name=name,
                where=where,
            )
        )
        if is_manifest:
            sha256[name] = _hex(entry.get("sha256"), 64, f"{where}sha256")
            keys[name] = _hex(entry.get("key"), 16, f"{where}key")
    return ParsedSpec(
        plan=Plan.of(specs),
        root_seed=root_seed,
        own_seed=own_seed,
        expected_sha256=sha256,
        expected_key=keys,
        manifest=dict(document) if is_manifest else None,
    )


def _hex(value: Any, length: int, label: str) -> str:
    if (
        not isinstance(value, str)
        or len(value) != length
        or any(c not in "0123456789abcdef" for c in value)
    ):
        raise UsageError(f"{label}: expected {length} lowercase hex digits")
    return value
