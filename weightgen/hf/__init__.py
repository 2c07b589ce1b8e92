"""Whole models from a Hugging Face ``config.json``: the spec of every tensor that
``save_pretrained`` would write, initialised by transformers' own rules; no torch needed.

``spec_for(config)`` turns a config into a weightgen spec (with the config, completed, under
``hf_config``); ``weightgen run`` or ``weightgen hf`` then writes a folder that transformers
loads as is. Families live in ``families/``, one module each, found at import.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
from typing import Any

from .. import strictjson
from ..dtypes import get_dtype
from ..errors import UsageError
from . import config_check, overrides
from .family import Family, Model
from .recipe import Recipe, check_base_width, check_std, resolve

MAX_CONFIG_BYTES = 1 << 20
# Config fields about weights weightgen does not write, left out of the folder's config.json:
# a quantization_config (gpt-oss's mxfp4, DeepSeek-V3's fp8) makes transformers expect
# quantized tensors (blocks and scales) where weightgen writes plain ones.
NOT_WRITTEN = ("quantization_config",)
# The dtypes transformers builds models in.
MODEL_DTYPES = ("float32", "bfloat16", "float16", "float64")


def _discover(package, attribute: str, key: str) -> dict:
    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        item = getattr(importlib.import_module(f"{package.__name__}.{info.name}"), attribute)
        found[getattr(item, key)] = item
    return dict(sorted(found.items()))


def _families() -> dict[str, Family]:
    from . import families

    return _discover(families, "FAMILY", "model_type")


def _recipes() -> dict[str, Recipe]:
    from . import recipes

    found = _discover(recipes, "RECIPE", "name")
    return {"hf": found.pop("hf"), **found}  # the default first


FAMILIES: dict[str, Family] = _families()
ALIASES: dict[str, Family] = {a: f for f in FAMILIES.values() for a in f.aliases}
RECIPES: dict[str, Recipe] = _recipes()
DEFAULT_RECIPE = "hf"


def load_config(source: str | os.PathLike) -> dict[str, Any]:
    """A config.json (or a folder holding one, or a hub id ORG/NAME[@REVISION]: hub.py),
    parsed strictly: it is untrusted input."""
    return read_config(source)[0]


def read_config(source: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """(the config, how messages name it): the path as the user gave it, ``DIR/config.json``
    for a folder, ``ORG/NAME's config.json`` for a hub id."""
    from . import hub

    path = hub.config_path(source)
    given = os.fspath(source)
    if os.fspath(path) == given:
        where = given
    elif hub.parse(given) is not None:
        where = f"{given}'s config.json"
    else:
        where = os.fspath(path)
    if path.is_dir():
        path = path / "config.json"
        where = os.path.join(where, "config.json")
    raw = strictjson.read_bounded(str(path), MAX_CONFIG_BYTES, error=UsageError, what=where)
    config = strictjson.loads(raw, error=UsageError, what=where)
    if not isinstance(config, dict):
        raise UsageError(f"{where}: a config.json holds a JSON object")
    return config, where


def built_in(config: dict[str, Any]) -> Family | None:
    """The built-in family ``config``'s model_type names (or an alias of one); None else."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        return None
    return FAMILIES.get(model_type) or ALIASES.get(model_type)


def family_of(config: dict[str, Any], where: str = "config.json") -> Family:
    model_type = config.get("model_type")
    family = built_in(config)
    if family is not None:
        return family
    known = f"weightgen knows {', '.join(FAMILIES)}"
    if model_type is None:
        raise UsageError(
            f'{where} has no model_type; add one (e.g. "model_type": "llama"): {known}'
        )
    if not isinstance(model_type, str):
        raise UsageError(f"{where}: model_type must be a string, got {model_type!r}; {known}")
    names = [*FAMILIES, *ALIASES]
    normal = model_type.lower().replace("-", "_").strip()
    same = [n for n in names if n == normal]  # Llama, qwen3-moe: the name, misspelled
    if same:
        raise UsageError(
            f"{where}: model_type {model_type!r} is not supported; did you mean {same[0]}? "
            "(model_type is lower case, with underscores)"
        )
    # A typo (lama, qwen3_mo), not another model that shares a prefix (llama4).
    close = [
        n
        for n in difflib.get_close_matches(normal, names, n=3, cutoff=0.8)
        if not normal.startswith(n)
    ]
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise UsageError(
        f"{where}: model_type {model_type!r} is not supported{hint}; {known}; for any other "
        "type transformers knows, add --from-transformers (needs torch and transformers)"
    )


def model_of(config: dict[str, Any], head: str | None = None, where: str = "config.json") -> Model:
    """The family, head, resolved fields and tensors of a config; UsageError naming the
    field (and ``where``: the config's path as the user gave it) for anything invalid."""
    family = family_of(config, where)
    try:
        chosen = family.head(head, config.get("architectures"))
        resolved = family.resolve(config)
        return Model(family, chosen, resolved, family.tensors_of(chosen, resolved))
    except UsageError as exc:
        text = str(exc)
        if where != "config.json" and text.startswith("config.json: "):
            raise UsageError(f"{where}: {text[len('config.json: ') :]}") from None
        raise


def config_dtype(config: dict[str, Any]) -> str:
    """The config's own dtype (``dtype``, or ``torch_dtype`` from older transformers), if it
    names one transformers builds models in; else float32."""
    for key in ("dtype", "torch_dtype"):
        value = config.get(key)
        if isinstance(value, str) and value != "auto":
            try:
                name = get_dtype(value, option=f"config.json: {key}").name
            except UsageError:
                continue
            if name in MODEL_DTYPES:
                return name
    return "float32"


def model_dtypes(
    config: dict[str, Any], dtype: str | None, sample_dtype: str | None
) -> tuple[str, str]:
    """(the weights' dtype, the dtype values are drawn in) of a model: ``--dtype``, else the
    config's; draws in float32 for half precision unless ``--sample-dtype`` says."""
    dtype_name = get_dtype(dtype).name if dtype is not None else config_dtype(config)
    if dtype_name not in MODEL_DTYPES:
        raise UsageError(
            f"--dtype {dtype_name}: transformers builds models in {', '.join(MODEL_DTYPES)}"
        )
    if sample_dtype is None:
        # Full-resolution draws, rounded: JAX's own half-precision draws take few values.
        return dtype_name, "float32" if dtype_name in ("bfloat16", "float16") else dtype_name
    return dtype_name, get_dtype(sample_dtype, option="--sample-dtype").name


def recipe_of(name: str | None) -> Recipe:
    recipe = RECIPES.get(name or DEFAULT_RECIPE)
    if recipe is None:
        raise UsageError(f"--init {name!r}: the recipes are {', '.join(RECIPES)}")
    return recipe


def mup_recipes() -> list[str]:
    """The recipes that take a μP base width."""
    return [name for name, recipe in RECIPES.items() if recipe.mup]


def base_width_of(recipe: Recipe, given: Any) -> int | None:
    """``--mup-base-width``, checked, for a recipe with a μP form; refused, in one line
    naming the recipes that have one, for any other."""
    if given is None:
        return None
    if not recipe.mup:
        reason = recipe.no_base_width or f"the {recipe.name} recipe has no μP form"
        raise UsageError(
            f"--mup-base-width: {reason}; the recipes with a μP base width: "
            f"{', '.join(mup_recipes())} (--init {mup_recipes()[0]} --mup-base-width W)"
        )
    return check_base_width(given)


def spec_for(
    config: dict[str, Any],
    *,
    head: str | None = None,
    dtype: str | None = None,
    sample_dtype: str | None = None,
    seed: int = 0,
    init: str | None = None,
    init_std: float | None = None,
    rules: list[str] | tuple[str, ...] | None = None,
    from_transformers: bool = False,
    mup_base_width: int | None = None,
    strict: bool = False,
    where: str = "config.json",
    quantize: str | None = None,
) -> dict[str, Any]:
    """The weightgen spec of a whole model: every tensor with its init rule (the family's
    own, or the recipe ``init``'s with base std ``init_std``, then the ``rules`` given), and
    the config to write beside it (``hf_config``), completed with every field the shapes
    came from, the architecture and the dtype. A recipe other than the default, a base std
    or rules are recorded under ``recipe``. ``mup_base_width``: μP's base width, for a
    recipe with a μP form (recorded too). ``from_transformers``: names, shapes, dtypes and
    init read from the model transformers builds (from_transformers.py), for any type it
    knows. ``quantize``: a format of quant/formats.py, or ``"published"`` (the one the
    config's quantization_config names): the tensors of the roles it quantizes are drawn in
    float32 and stored as the format stores them, and config.json carries the loader's
    quantization_config.

    A key that is a near-miss of a field the shapes read (``num_layers``) is refused; with
    ``strict``, so is any key transformers does not know and any size field left to its
    class default (config_check.py); those taken are recorded under ``config_defaults``.
    ``where`` names the config in messages (its path as the user gave it)."""
    dtype_name, sample_dtype = model_dtypes(config, dtype, sample_dtype)
    quantized = _quant_scheme(config, quantize)
    if from_transformers:
        if quantized is not None:
            raise UsageError(
                "--quantize works with the built-in families; drop --from-transformers"
            )
        from . import from_transformers as transformers_path

        model_type = config.get("model_type")
        family = built_in(config)
        if family is not None:  # its keys are known here, without transformers
            config_check.check(config, family, strict=strict, where=where)
        elif strict:
            raise UsageError(
                f"--strict checks the keys of the built-in families' configs; {where}'s "
                f"model_type {model_type!r} comes through --from-transformers, whose keys are "
                "not checked: drop --strict"
            )

        return transformers_path.spec_for(
            config,
            dtype_name=dtype_name,
            sample_dtype=sample_dtype,
            seed=seed,
            head=head,
            init=init,
            init_std=init_std,
            rules=rules,
            mup_base_width=mup_base_width,
        )
    recipe = recipe_of(init)
    given_std = check_std(init_std) if init_std is not None else None
    base_width = base_width_of(recipe, mup_base_width)
    parsed_rules = overrides.parse_all(rules)
    model = model_of(config, head, where)
    report = config_check.check(config, model.family, strict=strict, where=where)
    scheme = recipe.scheme_for(model.family.model_type)
    recipe.check(scheme, model.config)
    hf_config = {k: v for k, v in config.items() if k not in NOT_WRITTEN}
    if quantized is not None:
        hf_config["quantization_config"] = (
            config["quantization_config"] if quantize == PUBLISHED else quantized.config()
        )
    hf_config.update({k: v for k, v in vars(model.config).items() if not k.startswith("_")})
    hf_config.update(model.family.fixed)
    hf_config["model_type"] = model.family.model_type
    hf_config["architectures"] = [model.head.architecture]
    hf_config["dtype"] = hf_config["torch_dtype"] = dtype_name
    c = model.config
    sigma = recipe.base_std(c, given_std)
    left_alone = _left_alone(config if quantize == PUBLISHED else {})
    entries = resolve(
        model.tensors,
        scheme,
        c,
        sigma=sigma,
        layers=getattr(c, model.family.layers),
        hidden=getattr(c, model.family.hidden),
        base_width=base_width,
        experts=getattr(c, model.family.experts) if model.family.experts else 0,
        head_dim=getattr(c, "head_dim", None),
    )
    overrides.apply(parsed_rules, model.tensors, entries)
    tensors = {}
    for t in model.tensors:
        entry = {"shape": list(t.shape), **entries[t.name]}
        # transformers 5.x builds these in float32 in any model dtype, float64 included.
        if t.decl.float32 and dtype_name != "float32":
            entry["dtype"] = entry["sample_dtype"] = "float32"
        if (
            quantized is not None
            and quantized.takes(t.decl.role, t.decl.fans, t.shape)
            and not left_alone(t.name)
        ):
            quantized.check(t.name, t.shape)
            entry["dtype"] = entry["sample_dtype"] = "float32"  # drawn in float32
            entry["quantize"] = quantized.name
        tensors[t.name] = entry
    if quantized is not None and quantized.format.fused:
        _label_fused(quantized.format.fused, tensors)
    spec: dict[str, Any] = {
        "seed": seed,
        "dtype": dtype_name,
        "sample_dtype": sample_dtype,
        "hf_config": hf_config,
    }
    if report.defaults:
        spec["config_defaults"] = report.defaults
    if recipe.name != DEFAULT_RECIPE or given_std is not None or parsed_rules:
        spec["recipe"] = {
            "name": recipe.name,
            "init_std": sigma,
            "rules": [r.text for r in parsed_rules],
        }
        if base_width is not None:
            spec["recipe"]["mup_base_width"] = base_width
    if quantized is not None and not any("quantize" in e for e in tensors.values()):
        raise UsageError(
            f"--quantize {quantized.name} quantizes {', '.join(quantized.format.roles)} "
            f"weights in the layout its checkpoints store them, and {where} gives "
            f"{model.head.architecture} none: nothing would be quantized; drop --quantize "
            "or pick a format for this model"
        )
    if quantized is not None:
        spec["quantize"] = quantized.as_json()
        qc = hf_config["quantization_config"]
        if quantize != PUBLISHED and "ignore" in qc:  # compressed-tensors: Linear layers left
            qc["ignore"] = _left_linear(model, tensors)
    spec["tensors"] = tensors
    return spec


PUBLISHED = "published"  # --quantize published: the format the config's own names


def _left_alone(config: dict[str, Any]):
    """Whether a published config's ``modules_to_not_convert`` keeps a tensor's module
    unquantized, matched as transformers 5.24.0 does (quantizers_utils.should_convert_module:
    a pattern as a regex from the start, up to a module boundary, or as a suffix)."""
    import re

    qc = config.get("quantization_config") or {}
    if qc.get("quant_method") == "compressed-tensors":
        return _ignored(qc.get("ignore") or [])
    patterns = qc.get("modules_to_not_convert") or []
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise UsageError("config.json: quantization_config.modules_to_not_convert: a list of names")
    if not patterns:
        return lambda name: False
    try:
        regex = re.compile(rf"(?:{'|'.join(f'(?:{p})' for p in patterns)})(?:(?<=\.)|(?=\.|$))")
    except re.error as exc:
        raise UsageError(f"config.json: modules_to_not_convert: {exc}") from None
    suffixes = tuple(patterns)

    def left(name: str) -> bool:
        module = name.removesuffix(".weight")
        return bool(regex.match(module)) or module.endswith(suffixes)

    return left


def _ignored(ignore: Any):
    """Whether compressed-tensors' ``ignore`` keeps a tensor's module unquantized: a module
    named exactly, or matched by a ``re:`` regex (compressed-tensors 0.20.0 ``match_name``)."""
    import re

    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise UsageError("config.json: quantization_config.ignore: a list of module names")
    exact = {p for p in ignore if not p.startswith("re:")}
    try:
        regexes = [re.compile(p[3:]) for p in ignore if p.startswith("re:")]
    except re.error as exc:
        raise UsageError(f"config.json: quantization_config.ignore: {exc}") from None

    def left(name: str) -> bool:
        module = name.removesuffix(".weight")
        return module in exact or any(r.match(module) for r in regexes)

    return left


def _left_linear(model: Model, tensors: dict[str, dict]) -> list[str]:
    """The linear modules a format leaves unquantized (compressed-tensors' ``ignore``):
    the output head (a module even when tied) and the routers."""
    left = {"lm_head"}
    for t in model.tensors:
        base = t.decl.role.split(".", 1)[0]
        named = base in ("head", "router") and t.name.endswith(".weight")
        if named and "quantize" not in tensors[t.name]:
            left.add(t.name.removesuffix(".weight"))
    return sorted(left)


def _label_fused(fused: tuple[tuple[str, ...], ...], tensors: dict[str, dict]) -> None:
    """Give the sibling weights a serving engine fuses (q/k/v, gate/up: the format's
    ``fused``) one ``fused`` label, so they share a global scale, as llm-compressor's
    ``update_fused_layer_weight_global_scales`` does: only when every one of them is
    quantized (a module left alone leaves its siblings their own)."""
    found: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for name, entry in tensors.items():
        if "quantize" not in entry or not name.endswith(".weight"):
            continue
        parent, _, last = name.removesuffix(".weight").rpartition(".")
        for group in fused:
            if last in group:
                found.setdefault((parent, group), []).append(name)
    for (parent, group), names in found.items():
        if len(names) == len(group):
            for name in names:
                tensors[name]["fused"] = f"{parent}.{'+'.join(group)}"


def _quant_scheme(config: dict[str, Any], quantize: str | None):
    """The quantization scheme ``--quantize`` asks for (quant.Scheme), or None."""
    if quantize is None:
        return None
    from .. import quant

    if quantize == PUBLISHED:
        return quant.published(config)
    return quant.scheme_of(quantize)


def config_notes(
    config: dict[str, Any],
    where: str = "config.json",
    *,
    quantized: bool = False,
    from_transformers: bool = False,
) -> list[str]:
    """One line for each field of ``config`` the written config.json leaves out (none when
    the folder is ``quantized``), each size field left to its class default, and the keys
    transformers does not know (built-in families: config_check.py)."""
    how = (
        "--quantize works with the built-in families, not --from-transformers"
        if from_transformers
        else "add --quantize published to write the checkpoint in the format it names"
    )
    lines = (
        []
        if quantized
        else [
            f"note: {where}'s {key} is left out of the folder's config.json: weightgen "
            f"writes unquantized weights unless asked; {how}"
            for key in NOT_WRITTEN
            if key in config
        ]
    )
    family = built_in(config)
    if family is not None:
        lines += config_check.notes(config_check.check(config, family, where=where), where)
    return lines


def config_with_dtype(hf_config: dict[str, Any], dtype: str) -> dict[str, Any]:
    """``hf_config`` with ``dtype`` and ``torch_dtype`` naming the weights' dtype (what a
    spec run writes when its tensors share one)."""
    return {**hf_config, "dtype": dtype, "torch_dtype": dtype}


def families_table() -> str:
    """The README's table of families, from the declarations themselves."""
    lines = [
        "| model_type | architectures (`--head`) | init rules beyond normal(initializer_range) |",
        "|---|---|---|",
    ]
    for family in FAMILIES.values():
        heads = ", ".join(
            f"{h.architecture} (`{h.name}`)" if len(family.heads) > 1 else h.architecture
            for h in family.heads
        )
        lines.append(f"| `{family.model_type}` | {heads} | {family.rules} |")
    return "\n".join(lines)


def check_tensors(
    hf_config: dict[str, Any],
    tensors,
    where: str = "the spec",
    config_name: str = "its hf_config",
    fix: str = "make the tensors and hf_config agree, or pass --no-config-check",
) -> None:
    """Refuse tensors (name, shape, dtype each) that are not what ``hf_config`` gives, in one
    line naming the first difference: a spec edited into a folder whose config.json says
    another model. Each tensor's init may differ (that is what editing a spec is for). A
    model type weightgen does not build (a --from-transformers spec) is not checked: that
    needs transformers."""
    if built_in(hf_config) is None:
        return
    label = f"{where}'s hf_config" if config_name == "its hf_config" else config_name
    model = model_of(hf_config, None, label)
    dtype = config_dtype(hf_config)
    # A quantized weight is checked as the tensor it stands for (its logical name and shape;
    # its stored parts carry the format's dtypes, and the format checked their shapes).
    have = {t.name: t for t in tensors if t.quant is None}
    quantized = {t.quant.logical.name: t.quant.logical for t in tensors if t.quant is not None}
    have.update(quantized)
    fix = f"; {fix}" if fix else ""
    gives = f"{config_name} ({model.head.architecture}) gives"
    for t in model.tensors:
        want_dtype = "float32" if t.decl.float32 else dtype
        found = have.get(t.name)
        if found is None:
            raise UsageError(
                f"{where} has no tensor {t.name}; {gives} it, {list(t.shape)} {want_dtype}{fix}"
            )
        if tuple(found.shape) != tuple(t.shape):
            raise UsageError(
                f"{where}: {t.name} is {list(found.shape)}; {gives} {list(t.shape)}{fix}"
            )
        if found.dtype.name != want_dtype and t.name not in quantized:
            raise UsageError(f"{where}: {t.name} is {found.dtype.name}; {gives} {want_dtype}{fix}")
    names = {t.name for t in model.tensors}
    for name in have:
        if name not in names:
            raise UsageError(f"{where}: {name} is not a tensor {gives}{fix}")
