"""Whole models of any type transformers knows (``weightgen hf --from-transformers``).

transformers itself says which tensors ``save_pretrained`` writes, their shapes and dtypes,
and how its own ``_init_weights`` initialises each (transformers_layout.py, the one module
that imports torch and transformers, imported here only when the flag is used). This module
adds weightgen's parts, in pure Python: the dtypes, ``--rule``, the config written, the
record in the manifest, and one error for a tensor whose init no jax initializer expresses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..dtypes import get_dtype
from ..errors import UsageError
from . import overrides
from .family import Built

# weightgen is used from a clone: its extra is installed from there, not by name.
INSTALL = (
    "pip install torch transformers (from a clone of weightgen, the tested versions: "
    ".venv/bin/pip install -c constraints.txt -e '.[transformers]')"
)
SOURCE = "transformers "  # the recipe record's name: "transformers 5.24.0"
HALF = ("bfloat16", "float16")


@dataclass(frozen=True)
class _Decl:
    """What ``--rule`` reads of a tensor's declaration: its default fan axes."""

    fans: tuple


def spec_for(
    config: dict[str, Any],
    *,
    dtype_name: str,
    sample_dtype: str,
    seed: int,
    head: str | None = None,
    init: str | None = None,
    init_std: float | None = None,
    rules: list[str] | tuple[str, ...] | None = None,
    mup_base_width: int | None = None,
) -> dict[str, Any]:
    """The spec of the model transformers builds from ``config``, in ``dtype_name``; each
    tensor's entry read from transformers' own init, then the ``rules`` given."""
    if head is not None:
        raise UsageError(
            f"--head {head}: --head picks among a built-in family's classes; with "
            "--from-transformers the class is the config's architectures[0] (else "
            "transformers' causal-LM class for the type)"
        )
    if init not in (None, "hf"):
        raise UsageError(
            f"--init {init}: with --from-transformers only hf (transformers' own init) "
            "applies; a recipe needs each tensor's role, which only weightgen's built-in "
            "families declare. Set single tensors with --rule"
        )
    if init_std is not None:
        raise UsageError(
            "--init-std: with --from-transformers each std is the one transformers' "
            "_init_weights uses; change the config's initializer_range instead"
        )
    if mup_base_width is not None:
        raise UsageError(
            "--mup-base-width: with --from-transformers only hf (transformers' own init) "
            "applies, which has no μP form; use a built-in family with --init megatron"
        )
    parsed_rules = overrides.parse_all(rules)
    check_sizes(config)
    from . import NOT_WRITTEN  # a quantization_config: the weights written are not quantized

    config = {k: v for k, v in config.items() if k not in NOT_WRITTEN}
    layout = read_layout(config, dtype_name)
    tensors = [Built(t.name, t.shape, _Decl(t.fans), None) for t in layout.tensors]
    unexpressed = {}
    entries: dict[str, dict] = {}
    for t in layout.tensors:
        if t.entry is None:
            unexpressed[t.name] = entries[t.name] = {}  # a marker a rule replaces
        else:
            entries[t.name] = dict(t.entry)
    overrides.apply(parsed_rules, tensors, entries)
    left = [t for t in layout.tensors if entries[t.name] is unexpressed.get(t.name)]
    if left:
        raise _not_expressed(left, layout.version)
    spec_tensors = {}
    for t in layout.tensors:
        entry = {"shape": list(t.shape), **entries[t.name]}
        if t.dtype != dtype_name:
            try:
                get_dtype(t.dtype)
            except UsageError:
                raise UsageError(
                    f"tensor {t.name!r}: transformers keeps it in {t.dtype}, which weightgen "
                    "does not write"
                ) from None
            entry["dtype"] = t.dtype
            entry["sample_dtype"] = "float32" if t.dtype in HALF else t.dtype
        spec_tensors[t.name] = entry
    # The user's fields, then the class defaults transformers used (in sub-configs too).
    hf_config = _filled(config, {k: v for k, v in layout.config.items() if k not in NOT_WRITTEN})
    hf_config["architectures"] = [layout.architecture]
    hf_config["dtype"] = hf_config["torch_dtype"] = dtype_name
    return {
        "seed": seed,
        "dtype": dtype_name,
        "sample_dtype": sample_dtype,
        "hf_config": hf_config,
        "recipe": {
            "name": SOURCE + layout.version,
            "init_std": None,
            "rules": [r.text for r in parsed_rules],
        },
        "tensors": spec_tensors,
    }


def _filled(given: dict, defaults: dict) -> dict:
    """``given`` with every field of ``defaults`` it lacks, nested configs merged alike."""
    out = dict(given)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = _filled(out[key], value)
    return out


MAX_BLOCKS = 100_000  # layers x experts: each is at least one tensor, and a spec holds 100,000
# A count of layers or experts, in any (sub-)config: num_hidden_layers, n_layer,
# encoder_layers, num_decoder_layers, num_local_experts, n_routed_experts, moe_num_experts...
COUNT = re.compile(r"(?:^|_)(layers?|experts)$")


def check_sizes(config: dict) -> None:
    """Before transformers builds anything from an untrusted config: no more layers x
    experts than a model may have tensors (on the meta device sizes cost nothing; counts of
    modules do). Every nested config counts (text_config, vision_config, ...): each adds its
    largest layer count times its largest expert count."""
    total = 0
    for part in _configs(config):
        layers, experts = 1, 1
        for key, value in part.items():
            match = COUNT.search(key) if isinstance(key, str) else None
            if match is None or not _count(value):
                continue
            if value > MAX_BLOCKS:
                raise UsageError(f"config.json: {key} {value} is not a sane layer or expert count")
            if match.group(1) == "experts":
                experts = max(experts, value)
            else:
                layers = max(layers, value)
        total += layers * experts
        if total > MAX_BLOCKS:
            raise UsageError(
                f"config.json: its layers and experts make more than {MAX_BLOCKS:,} tensors "
                f"({layers} layers of {experts} experts in one part); a model may have at "
                "most that many"
            )


def _configs(config: dict, depth: int = 0) -> Iterator[dict]:
    """``config`` and every config nested in it (dicts, and dicts in lists)."""
    yield config
    if depth >= 8:
        return
    for value in config.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                yield from _configs(item, depth + 1)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def read_layout(config: dict[str, Any], dtype_name: str):
    """transformers' layout of ``config``; one line saying what to install without it."""
    try:
        from . import transformers_layout
    except ImportError as exc:
        raise UsageError(
            f"--from-transformers needs torch and transformers ({exc.name or exc} is not "
            f"installed): {INSTALL}"
        ) from None
    return transformers_layout.read(config, dtype_name)


def layout_source(spec: dict[str, Any]) -> str | None:
    """``"transformers 5.24.0"`` when transformers supplied a spec's layout, else None."""
    recipe = spec.get("recipe")
    name = recipe.get("name") if isinstance(recipe, dict) else None
    if isinstance(name, str) and name.startswith(SOURCE):
        return name
    return None


def _not_expressed(left: list, version: str) -> UsageError:
    first = left[0]
    more = ""
    if len(left) > 1:
        names = ", ".join(t.name for t in left[1:4])
        more = f" ({len(left) - 1} more like it: {names}{', ...' if len(left) > 4 else ''})"
    shape = "x".join(map(str, first.shape)) or "scalar"
    return UsageError(
        f"tensor {first.name!r} ({shape}): transformers {version} initialises it with "
        f"{first.problem}; no jax initializer expresses that. Give it one with "
        f"--rule '{first.name}=INIT[,param=value...]'{more}"
    )
