"""Spec files (JSON or TOML): a whole model's tensors, written down once.

::

    {"seed": 7, "dtype": "float32",
     "tensors": {
       "embed.weight": {"init": "normal", "shape": [1000, 64], "stddev": 0.02},
       "rnn.kernel": {"init": "orthogonal", "shape": [128, 128], "seed": 99}}}

Each tensor names its initializer (CLI names and aliases), its shape and optionally its
``dtype``, ``sample_dtype``, ``seed``, ``zero_rows`` (rows along axis 0 set to zero after
drawing: ``init(key, shape, dtype).at[rows].set(0)``) and ``transform`` (a named elementwise
map of the values drawn, initializers.TRANSFORMS: ``{"name": "log", "offset": 0.01}`` is
``jnp.log(init(key, shape, sample_dtype) + 0.01).astype(dtype)``); initializer parameters
sit beside them under JAX's argument names. Top-level ``seed``, ``dtype`` and
``sample_dtype`` are defaults; a top-level ``hf_config`` (a Hugging Face config.json) makes
the output a model folder with that config.

The key rule: a tensor with its own ``seed`` uses ``jax.random.key(seed)``; the others use
``jax.random.fold_in(jax.random.key(root_seed), name_fold_in(name))``, so adding, removing or
reordering tensors never changes another tensor's bytes.

A manifest (manifest.py) is a spec with more keys; this parser reads both, and returns what
the manifest expects (hashes, keys) beside the plan. Spec files are untrusted input: size,
nesting, duplicate keys, NaN and unknown keys are all refused with a message naming them.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import initializers, strictjson
from .errors import UsageError
from .plan import Plan, TensorSpec, check_name, make_tensor, name_fold_in, parse_seed

MAX_SPEC_BYTES = 64 << 20  # a manifest of 100,000 tensors (Kimi-K2 has 70,000) is ~40 MB
MAX_TENSORS = 100_000

TENSOR_KEYS = (
    "init",
    "shape",
    "dtype",
    "sample_dtype",
    "seed",
    "zero_rows",
    "transform",
    "quantize",
    "fused",
)
# What a manifest adds per tensor, by manifest format version ("stored": the tensors a
# quantized weight became, each with its bytes and digests).
MANIFEST_TENSOR_KEYS = {
    1: ("key", "sha256", "bytes"),
    2: ("key", "bytes", "digest", "blocks", "stored"),
}
TOP_KEYS = (
    "seed",
    "dtype",
    "sample_dtype",
    "hf_config",
    "config_defaults",
    "recipe",
    "quantize",
    "tensors",
)
MANIFEST_TOP_KEYS = {
    1: ("weightgen_manifest", "created_by", "environment", "output"),
    2: ("weightgen_manifest", "digest", "created_by", "environment", "output"),
}
MIN_BLOCK, MAX_BLOCK = 1 << 12, 1 << 28  # a power of two: whole elements, one read each


@dataclass
class ParsedSpec:
    plan: Plan
    root_seed: int
    own_seed: set[str]  # tensors that carry their own seed
    hf_config: dict[str, Any] | None = None  # a Hugging Face config.json to write beside
    recipe: dict[str, Any] | None = None  # how a model's init rules were chosen (a record)
    # hf_config's size fields the config.json left to the class default (a record)
    config_defaults: dict[str, Any] | None = None
    quantize: dict[str, Any] | None = None  # the format and its parameters (quant.Scheme)
    manifest: dict[str, Any] | None = None  # the whole document, when it is a manifest
    version: int = 0  # the manifest format (0: a spec)
    expected_key: dict[str, str] = field(default_factory=dict)  # from a manifest
    expected_sha256: dict[str, str] = field(default_factory=dict)  # format 1
    expected_digest: dict[str, bytes] = field(default_factory=dict)  # format 2
    expected_blocks: dict[str, list[bytes]] = field(default_factory=dict)  # format 2
    block_bytes: int = 0  # format 2


def read_text(source: str) -> tuple[str, str]:
    """(text, kind) from a path or ``-`` (stdin); kind is "toml" or "json"."""
    raw = strictjson.read_bounded(source, MAX_SPEC_BYTES, error=UsageError, what=f"spec {source}")
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
    version = _manifest_version(document)
    is_manifest = version > 0
    allowed = TOP_KEYS + MANIFEST_TOP_KEYS.get(version, ())
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
    hf_config = document.get("hf_config")
    if hf_config is not None and not isinstance(hf_config, dict):
        raise UsageError("spec: hf_config must be a table (a Hugging Face config.json)")
    recipe = _recipe(document.get("recipe"))
    config_defaults = document.get("config_defaults")
    if config_defaults is not None and (not isinstance(config_defaults, dict) or hf_config is None):
        raise UsageError(
            "spec: 'config_defaults' must be a table (of hf_config's fields left to their "
            "class default), beside an hf_config"
        )
    scheme = None
    if document.get("quantize") is not None:
        from . import quant

        scheme = quant.scheme_of(document["quantize"], where="spec: quantize")
    block_bytes = _block_bytes(document) if version >= 2 else 0
    tensors = document.get("tensors")
    if not isinstance(tensors, dict) or not tensors:
        raise UsageError("spec: 'tensors' must be a non-empty table of name -> tensor")
    if len(tensors) > MAX_TENSORS:
        raise UsageError(f"spec: more than {MAX_TENSORS} tensors")

    parsed = ParsedSpec(
        plan=Plan(()),
        root_seed=root_seed,
        own_seed=set(),
        hf_config=dict(hf_config) if hf_config is not None else None,
        recipe=recipe,
        config_defaults=dict(config_defaults) if config_defaults else None,
        quantize=scheme.as_json() if scheme is not None else None,
        manifest=dict(document) if is_manifest else None,
        version=version,
        block_bytes=block_bytes,
    )
    specs = []
    templates: dict[str, TensorSpec] = {}
    layouts: dict[str, list] = {}  # a quantized kind of tensor: its stored parts
    # ``fused`` label -> the logical weights sharing a global part, filled as they come
    fused_groups: dict[str, list[TensorSpec]] = {}
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
        extra = MANIFEST_TENSOR_KEYS.get(version, ())
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
        quantized = _quantized(entry, scheme, where)
        if "fused" in entry and not quantized:
            raise UsageError(
                f"{where}fused {entry['fused']!r}: only a quantized weight shares a global "
                "scale with others; drop it"
            )
        if "seed" in entry:
            seed, fold_in = parse_seed(entry["seed"], label=f"{where}seed"), None
            parsed.own_seed.add(name)
        else:
            seed, fold_in = root_seed, name_fold_in(name)
        # Tensors that differ only in name and seed (a model's layers and experts) are
        # validated once: the rest of the entry is the key.
        token = repr(
            [(k, v) for k, v in entry.items() if k not in ("seed", "fused") and k not in extra]
        )
        template = templates.get(token)
        if template is None:
            template = templates[token] = make_tensor(
                init,
                entry["shape"],
                params={k: v for k, v in entry.items() if k in accepted},
                dtype="float32"
                if quantized
                else entry.get("dtype", defaults.get("dtype", "float32")),
                sample_dtype="float32"
                if quantized
                else entry.get("sample_dtype", defaults.get("sample_dtype")),
                seed=seed,
                fold_in=fold_in,
                zero_rows=entry.get("zero_rows", ()),
                transform=entry.get("transform"),
                name=name,
                where=where,
            )
        logical = dataclasses.replace(template, name=name, seed=seed, fold_in=fold_in)
        if quantized:
            layout = layouts.get(token)
            if layout is None:
                layout = layouts[token] = _stored_layout(scheme, logical, where)
            fused = _fused(entry, scheme, where)
            group = None
            if fused is not None:
                group = fused_groups.setdefault(fused, [])
                group.append(logical)
            stored = _stored_parts(scheme, layout, logical, where, fused, group)
            specs.extend(stored)
            if is_manifest:
                _stored_expectations(parsed, stored, entry, where)
            continue
        specs.append(logical)
        if is_manifest:
            _expectations(parsed, specs[-1], entry, where)
    parsed.plan = Plan.of(specs)
    return parsed


def _quantized(entry: Mapping[str, Any], scheme, where: str) -> bool:
    """Whether a tensor is quantized (its ``quantize`` names the spec's format): then it is
    drawn in float32 and stored as the format's parts."""
    name = entry.get("quantize")
    if name is None:
        return False
    if scheme is None:
        raise UsageError(
            f"{where}quantize {name!r}: the spec has no top-level 'quantize' table saying the "
            'format and its parameters (e.g. {"format": "fp8-block", "block": [128, 128]})'
        )
    if name != scheme.name:
        raise UsageError(
            f"{where}quantize {name!r}: the spec's format is {scheme.name!r}; one format a spec"
        )
    for key in ("dtype", "sample_dtype"):
        if entry.get(key, "float32") != "float32":
            raise UsageError(
                f"{where}{key} {entry[key]}: a quantized tensor is drawn in float32 (the "
                "format's parts have their own dtypes); drop it"
            )
    return True


def _fused(entry: Mapping[str, Any], scheme, where: str) -> str | None:
    """A quantized weight's ``fused`` label: the weights with the same label share one
    global part (ct-nvfp4's global scale: q/k/v, gate/up), made from all of their draws."""
    label = entry.get("fused")
    if label is None:
        return None
    if not scheme.has_global:
        raise UsageError(
            f"{where}fused {label!r}: {scheme.name} has no global scale to share; drop it"
        )
    if not isinstance(label, str) or not label:
        raise UsageError(f"{where}fused must be a non-empty string (a group label), got {label!r}")
    return label


def _stored_layout(scheme, logical: TensorSpec, where: str) -> list[tuple]:
    """(suffix, shape, dtype) of each tensor a quantized weight of this kind becomes; checked
    once per kind of tensor (a model's 70,000 experts share a few)."""
    if not logical.init.elementwise:
        raise UsageError(
            f"{where}{logical.init.name} computes the whole tensor at once; a quantized weight "
            "is drawn band by band: choose an elementwise initializer (normal, "
            "truncated-normal, variance-scaling, ...)"
        )
    if len(logical.shape) != scheme.format.ndim:
        raise UsageError(
            f"{where}{scheme.name} quantizes {scheme.format.ndim}-D weights, the shape is "
            f"{list(logical.shape)}"
        )
    scheme.check(logical.name, logical.shape, where=where.rstrip().rstrip(":"))
    return [
        (part.suffix, shape, dtype)
        for _, shape, dtype, part in scheme.stored(logical.name, logical.shape)
    ]


def _stored_parts(
    scheme,
    layout: list[tuple],
    logical: TensorSpec,
    where: str,
    fused: str | None = None,
    group: list[TensorSpec] | None = None,
) -> list:
    """The stored tensors a quantized weight becomes, each made from ``logical`` (and, for
    a global part, from the ``fused`` ``group`` it shares it with: complete once parsed)."""
    from .plan import MAX_NAME, QuantPart

    if len(logical.name) + max(len(suffix) for suffix, _, _ in layout) > MAX_NAME:
        raise UsageError(f"{where}the names of its stored tensors are longer than {MAX_NAME}")
    # TensorSpec built directly: dataclasses.replace costs 25 us a call, 5 s for Kimi-K2.
    return [
        TensorSpec(
            name=logical.name + suffix,
            init=logical.init,
            params=logical.params,
            shape=shape,
            dtype=dtype,
            sample_dtype=logical.sample_dtype,
            seed=logical.seed,
            fold_in=logical.fold_in,
            quant=QuantPart(logical, scheme, suffix, fused, group if group is not None else ()),
        )
        for suffix, shape, dtype in layout
    ]


def _stored_expectations(
    parsed: ParsedSpec, stored: list[TensorSpec], entry: Mapping[str, Any], where: str
) -> None:
    """What a manifest recorded for a quantized weight: its key, and each stored part's
    dtype, shape and digests."""
    if parsed.version < 2:
        raise UsageError(f"{where}a format 1 manifest holds no quantized tensors")
    key = _hex(entry.get("key"), 16, f"{where}key")
    recorded = entry.get("stored")
    if not isinstance(recorded, dict) or set(recorded) != {t.name for t in stored}:
        names = ", ".join(t.name for t in stored)
        raise UsageError(f"{where}stored: expected a table of the tensors it becomes ({names})")
    for spec in stored:
        item = recorded[spec.name]
        label = f"{where}stored {spec.name!r}: "
        if not isinstance(item, dict):
            raise UsageError(f"{label}expected a table")
        if item.get("dtype") != spec.dtype.name or item.get("shape") != list(spec.shape):
            raise UsageError(
                f"{label}the manifest says {item.get('dtype')!r} {item.get('shape')!r}, the "
                f"format makes {spec.dtype.name} {list(spec.shape)}"
            )
        parsed.expected_key[spec.name] = key
        _expectations(parsed, spec, {"key": key, **item}, label)


def _recipe(value: Any) -> dict[str, Any] | None:
    """The record of how a model's rules were chosen (``weightgen hf --init``): kept and
    written to the manifest as it is; every tensor's entry already says how it is made."""
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or set(value) - {"mup_base_width"} != {"name", "init_std", "rules"}
        or not isinstance(value["name"], str)
        or not (value["init_std"] is None or _number(value["init_std"]))
        or not isinstance(value["rules"], list)
        or not all(isinstance(r, str) for r in value["rules"])
        or not _positive_int(value.get("mup_base_width", 1))
    ):
        raise UsageError(
            "spec: 'recipe' must be a table with 'name' (a string), 'init_std' (a number or "
            "null), 'rules' (a list of strings) and, with μP, 'mup_base_width' (a positive "
            "integer)"
        )
    return dict(value)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _manifest_version(document: Mapping[str, Any]) -> int:
    if "weightgen_manifest" not in document:
        return 0
    version = document["weightgen_manifest"]
    if version not in MANIFEST_TOP_KEYS or isinstance(version, bool):
        raise UsageError(
            f"manifest format {version!r} is not one this weightgen reads "
            f"({', '.join(map(str, MANIFEST_TOP_KEYS))}); a newer weightgen may"
        )
    return version


def _block_bytes(document: Mapping[str, Any]) -> int:
    from .digest import ALGORITHM

    scheme = document.get("digest")
    if not isinstance(scheme, dict) or set(scheme) != {"algorithm", "block_bytes"}:
        raise UsageError("manifest: 'digest' must give 'algorithm' and 'block_bytes'")
    if scheme["algorithm"] != ALGORITHM:
        raise UsageError(
            f"manifest: digest algorithm {scheme['algorithm']!r} is unknown (expected {ALGORITHM})"
        )
    size = scheme["block_bytes"]
    if (
        isinstance(size, bool)
        or not isinstance(size, int)
        or not MIN_BLOCK <= size <= MAX_BLOCK
        or size & (size - 1)
    ):
        raise UsageError(
            f"manifest: block_bytes must be a power of two from {MIN_BLOCK} to {MAX_BLOCK}"
        )
    return size


def _expectations(parsed: ParsedSpec, spec, entry: Mapping[str, Any], where: str) -> None:
    """What a manifest recorded for one tensor: its key and hashes, checked for form."""
    from .digest import block_count

    name = spec.name
    parsed.expected_key[name] = _hex(entry.get("key"), 16, f"{where}key")
    if entry.get("bytes") != spec.nbytes:
        raise UsageError(
            f"{where}bytes: the manifest says {entry.get('bytes')!r}, the shape "
            f"and dtype make {spec.nbytes}"
        )
    if parsed.version == 1:
        parsed.expected_sha256[name] = _hex(entry.get("sha256"), 64, f"{where}sha256")
        return
    parsed.expected_digest[name] = bytes.fromhex(_hex(entry.get("digest"), 64, f"{where}digest"))
    blocks = entry.get("blocks")
    count = block_count(spec.nbytes, parsed.block_bytes)
    if not isinstance(blocks, list) or len(blocks) != count:
        raise UsageError(f"{where}blocks: expected a list of {count} block digests")
    parsed.expected_blocks[name] = [
        bytes.fromhex(_hex(b, 64, f"{where}blocks[{i}]")) for i, b in enumerate(blocks)
    ]


_LOWER_HEX = re.compile("[0-9a-f]*")


def _hex(value: Any, length: int, label: str) -> str:
    if not isinstance(value, str) or len(value) != length or not _LOWER_HEX.fullmatch(value):
        raise UsageError(f"{label}: expected {length} lowercase hex digits")
    return value
