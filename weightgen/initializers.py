"""The registry: every initializer of ``jax.nn.initializers``, declared once.

The CLI's commands, ``weightgen list``, the spec parser and validation are all built from
``REGISTRY``. Each entry names its JAX function, its parameters (JAX's names and defaults),
its *family* (which sampling code runs it) and what it accepts. Adding an initializer is one
entry here plus, for a new family, one sampler in ``samplers.py``.

``TRANSFORMS`` are the named elementwise maps a spec tensor may apply to the values drawn
(its ``transform`` key), for inits that are not one initializer call (Qwen3-Next's
``A_log = log(uniform)``): declared here, run by ``samplers.py``.

Pure Python: no JAX import, so ``--help`` and ``list`` answer fast.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

Axes = int | tuple[int, ...]

MODES = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
DISTRIBUTIONS = ("truncated_normal", "normal", "uniform")


@dataclass(frozen=True)
class Param:
    """One initializer parameter, named exactly as JAX's argument."""

    name: str
    kind: str  # "float" | "axes" (int or tuple of ints) | "axis" (int) | "choice"
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()
    required: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def convert(self, value: Any, *, where: str = "") -> Any:
        """Normalise a value from the CLI or a spec file; UsageError naming the flag otherwise."""
        label = f"{where}{self.flag}"
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise UsageError(f"{label}: expected a number, got {value!r}")
            try:
                number = float(value)
            except ValueError:
                raise UsageError(f"{label}: expected a number, got {value!r}") from None
            if not math.isfinite(number):
                raise UsageError(f"{label}: expected a finite number, got {value!r}")
            return number
        if self.kind == "choice":
            if not isinstance(value, str) or value.replace("-", "_") not in self.choices:
                raise UsageError(
                    f"{label}: expected one of {', '.join(self.choices)}, got {value!r}"
                )
            return value.replace("-", "_")
        if self.kind == "axis":
            axes = parse_axes(value, label=label)
            if not isinstance(axes, int):
                raise UsageError(f"{label}: expected a single integer axis, got {value!r}")
            return axes
        if self.kind == "axes":
            return parse_axes(value, label=label)
        raise AssertionError(self.kind)

    def format(self, value: Any) -> str:
        if isinstance(value, tuple):
            return ",".join(map(str, value)) if value else "()"
        return str(value)


def parse_axes(value: Any, *, label: str) -> Axes:
    """``-2`` -> -2; ``"0,1"`` or ``[0, 1]`` -> (0, 1); ``""``, ``"()"`` or ``[]`` -> ()."""
    if isinstance(value, bool):
        raise UsageError(f"{label}: expected an integer or a comma list of integers, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)):
        items = list(value)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            raise UsageError(f"{label}: expected integers, got {value!r}")
        return tuple(items)
    if isinstance(value, str):
        text = value.strip()
        if text in ("", "()", "none"):
            return ()
        parts = [p.strip() for p in text.strip("()[]").split(",")]
        try:
            ints = tuple(int(p) for p in parts if p != "")
        except ValueError:
            raise UsageError(
                f"{label}: expected an integer or a comma list such as 0,1; got {value!r}"
            ) from None
        if "," not in text and len(ints) == 1:
            return ints[0]
        return ints
    raise UsageError(f"{label}: expected an integer or a comma list of integers, got {value!r}")


# --- Parameters, declared once and shared by the entries that take them. -------------------

_FAN_AXES = (
    Param("in_axis", "axes", -2, "axis or comma list of axes of the input dimension"),
    Param("out_axis", "axes", -1, "axis or comma list of axes of the output dimension"),
    Param("batch_axis", "axes", (), "axis or comma list of axes to ignore (default: none)"),
)
_ORTHO = (
    Param("scale", "float", 1.0, "multiplier of the orthogonal matrix"),
    Param("column_axis", "axis", -1, "the axis that holds the orthogonal columns"),
)


@dataclass(frozen=True)
class Initializer:
    """One initializer: its CLI name, the JAX function and how weightgen samples it."""

    name: str  # CLI name, hyphenated: "he-normal"
    jax_name: str  # attribute of jax.nn.initializers: "he_normal"
    family: str  # sampler family in samplers.py
    summary: str
    params: tuple[Param, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)  # family arguments this entry fixes
    aliases: tuple[str, ...] = ()
    jax_builder: bool = True  # False for zeros/ones, which JAX exposes as initializers directly
    complex_ok: bool = True

    @property
    def elementwise(self) -> bool:
        """Elementwise entries stream chunk by chunk; the others need the whole tensor (QR)."""
        return self.family not in ("orthogonal", "delta_orthogonal")

    @property
    def random(self) -> bool:
        return self.family != "constant"

    def resolve_params(self, given: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
        """JAX's keyword arguments for this entry: defaults, then ``given``, each validated."""
        unknown = sorted(set(given) - {p.name for p in self.params})
        if unknown:
            accepted = ", ".join(p.name for p in self.params) or "none"
            raise UsageError(
                f"{where}{self.name} has no parameter {unknown[0]!r} (it accepts: {accepted})"
            )
        resolved: dict[str, Any] = {}
        for p in self.params:
            if p.name in given and given[p.name] is not None:
                resolved[p.name] = p.convert(given[p.name], where=where)
            elif p.required:
                raise UsageError(f"{where}{self.name} needs {p.flag} ({p.help})")
            else:
                resolved[p.name] = p.default
        return resolved

    def family_args(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The full argument set of the family (fixed values plus the entry's parameters)."""
        return {**self.fixed, **params}


def _vs(name, jax_name, scale, mode, distribution, paper, aliases=()):
    return Initializer(
        name=name,
        jax_name=jax_name,
        family="variance_scaling",
        summary=f"variance scaling with scale={scale}, mode={mode}, "
        f"distribution={distribution} ({paper})",
        params=_FAN_AXES,
        fixed={"scale": scale, "mode": mode, "distribution": distribution},
        aliases=aliases,
    )


_ENTRIES = (
    Initializer("zeros", "zeros", "constant", "all zeros", fixed={"value": 0.0}, jax_builder=False),
    Initializer("ones", "ones", "constant", "all ones", fixed={"value": 1.0}, jax_builder=False),
    Initializer(
        "constant",
        "constant",
        "constant",
        "every element equal to --value",
        params=(Param("value", "float", None, "the constant", required=True),),
    ),
    Initializer(
        "uniform",
        "uniform",
        "uniform",
        "uniform in [0, scale)",
        params=(Param("scale", "float", 1e-2, "upper bound of the range"),),
        complex_ok=False,
    ),
    Initializer(
        "normal",
        "normal",
        "normal",
        "normal with mean 0 and standard deviation --stddev",
        params=(Param("stddev", "float", 1e-2, "standard deviation"),),
    ),
    Initializer(
        "truncated-normal",
        "truncated_normal",
        "truncated_normal",
        "normal truncated to (lower, upper), then multiplied by --stddev",
        params=(
            Param("stddev", "float", 1e-2, "standard deviation of the untruncated normal"),
            Param("lower", "float", -2.0, "lower truncation bound, before scaling"),
            Param("upper", "float", 2.0, "upper truncation bound, before scaling"),
        ),
        complex_ok=False,
    ),
    Initializer(
        "variance-scaling",
        "variance_scaling",
        "variance_scaling",
        "scale adapted to the fans: stddev sqrt(scale / n)",
        params=(
            Param("scale", "float", None, "scaling factor (positive)", required=True),
            Param("mode", "choice", None, "which fan is n", choices=MODES, required=True),
            Param(
                "distribution",
                "choice",
                None,
                "the distribution drawn from",
                choices=DISTRIBUTIONS,
                required=True,
            ),
            *_FAN_AXES,
        ),
    ),
    _vs(
        "glorot-uniform",
        "glorot_uniform",
        1.0,
        "fan_avg",
        "uniform",
        "Glorot & Bengio 2010",
        aliases=("xavier-uniform",),
    ),
    _vs(
        "glorot-normal",
        "glorot_normal",
        1.0,
        "fan_avg",
        "truncated_normal",
        "Glorot & Bengio 2010",
        aliases=("xavier-normal",),
    ),
    _vs("lecun-uniform", "lecun_uniform", 1.0, "fan_in", "uniform", "LeCun et al."),
    _vs("lecun-normal", "lecun_normal", 1.0, "fan_in", "truncated_normal", "LeCun et al."),
    _vs(
        "he-uniform",
        "he_uniform",
        2.0,
        "fan_in",
        "uniform",
        "He et al. 2015",
        aliases=("kaiming-uniform",),
    ),
    _vs(
        "he-normal",
        "he_normal",
        2.0,
        "fan_in",
        "truncated_normal",
        "He et al. 2015",
        aliases=("kaiming-normal",),
    ),
    Initializer(
        "orthogonal",
        "orthogonal",
        "orthogonal",
        "a uniformly distributed orthogonal matrix (QR; computed whole, then streamed)",
        params=_ORTHO,
    ),
    Initializer(
        "delta-orthogonal",
        "delta_orthogonal",
        "delta_orthogonal",
        "a 3-5-D convolution kernel, orthogonal at the spatial centre and zero elsewhere",
        params=_ORTHO,
    ),
)

REGISTRY: dict[str, Initializer] = {e.name: e for e in _ENTRIES}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


_LOOKUP: dict[str, Initializer] = {_key(n): e for e in _ENTRIES for n in (e.name, *e.aliases)}


def lookup(name: str) -> Initializer:
    """Find an entry by name or alias, hyphens or underscores; suggest the nearest otherwise."""
    entry = _LOOKUP.get(_key(name))
    if entry is not None:
        return entry
    close = difflib.get_close_matches(_key(name), list(_LOOKUP), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise UsageError(f"unknown initializer {name!r}; {hint}'weightgen list' shows them all")


def all_names() -> list[str]:
    """Every accepted hyphenated name and alias."""
    return list(_LOOKUP)


# --- Transforms: a named elementwise map of the values drawn (a spec tensor's "transform") ----


@dataclass(frozen=True)
class Transform:
    """A named elementwise map, applied to the values drawn in the sample dtype, before the
    cast to the dtype: the tensor is ``expression`` with ``x = init(key, shape, sample_dtype)``,
    each JAX op on its own (as eager JAX rounds and stores each), then ``.astype(dtype)``.
    ``domain`` says, from the lowest value the initializer can draw and the parameters,
    why the map would give NaN (None: it does not)."""

    name: str
    summary: str
    expression: str  # in JAX; x is the array drawn
    params: tuple[Param, ...]
    domain: Callable[[float, Mapping[str, Any]], str | None]


def _log_domain(lowest: float, params: Mapping[str, Any]) -> str | None:
    offset = params["offset"]
    if lowest + offset >= 0:
        return None  # an exact -offset gives -inf, as jnp.log(0.0) does
    return f"log(x + offset) is NaN below x = {-offset + 0.0:g}"


TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform(
            "log",
            "natural logarithm of the value plus offset; log(0) is -inf, as in JAX",
            "jnp.log(x + offset)",
            (Param("offset", "float", 0.0, "added to the values before the log"),),
            _log_domain,
        ),
    )
}


@dataclass(frozen=True)
class AppliedTransform:
    """A transform with every parameter resolved (defaults filled in, declaration order)."""

    transform: Transform
    params: tuple[tuple[str, Any], ...]

    @property
    def name(self) -> str:
        return self.transform.name

    def as_json(self) -> dict[str, Any]:
        """The canonical spec value, every parameter written out (manifests record this)."""
        return {"name": self.name, **dict(self.params)}


def parse_transform(value: Any, *, where: str = "") -> AppliedTransform | None:
    """A spec's ``transform``: ``"log"`` or ``{"name": "log", "offset": 0.01}``; None: none."""
    label = f"{where}transform"
    if value is None:
        return None
    if isinstance(value, str):
        name, given = value, {}
    elif isinstance(value, Mapping) and isinstance(value.get("name"), str):
        name, given = value["name"], {k: v for k, v in value.items() if k != "name"}
    else:
        text = repr(value)
        text = text if len(text) <= 60 else text[:57] + "..."
        raise UsageError(
            f'{label}: expected a name such as "log" or a table such as '
            f'{{"name": "log", "offset": 0.01}}, got {text}'
        )
    transform = TRANSFORMS.get(name.strip().lower())
    if transform is None:
        raise UsageError(
            f"{label} {name[:40]!r} is unknown; the transforms are: {', '.join(TRANSFORMS)}"
        )
    accepted = [p.name for p in transform.params]
    unknown = sorted(str(k) for k in set(given) - set(accepted))
    if unknown:
        raise UsageError(
            f"{label} {transform.name} has no parameter {unknown[0][:40]!r} (it accepts: "
            f"{', '.join(accepted) or 'none'})"
        )
    params = tuple(
        (p.name, p.convert(given[p.name], where=f"{label} ") if p.name in given else p.default)
        for p in transform.params
    )
    return AppliedTransform(transform, params)


def lowest_value(init: Initializer, params: Mapping[str, Any]) -> float:
    """The lowest value ``init`` can draw with ``params`` (-inf: no bound is known)."""
    args = init.family_args(params)
    if init.family == "constant":
        return args["value"]
    if init.family == "uniform":
        return min(0.0, args["scale"])  # JAX: uniform(0, 1) * scale
    if init.family == "truncated_normal":
        stddev = args["stddev"]
        return stddev * (args["lower"] if stddev >= 0 else args["upper"])
    return -math.inf


def check_transform(
    init: Initializer, params: Mapping[str, Any], applied: AppliedTransform
) -> None:
    """Refuse a transform on a whole-tensor initializer (QR), or one that would turn the
    values ``init`` draws into NaNs."""
    if not init.elementwise:
        raise UsageError(
            f"transform {applied.name}: {init.name} is computed whole (QR); transforms apply "
            "to the elementwise initializers"
        )
    lowest = lowest_value(init, params)
    problem = applied.transform.domain(lowest, dict(applied.params))
    if problem is not None:
        drawn = "values of either sign" if lowest == -math.inf else f"values down to {lowest:g}"
        raise UsageError(
            f"transform {applied.name}: {init.name} draws {drawn}, and {problem}; use an "
            "initializer whose values stay in its domain (uniform, a constant) or a larger offset"
        )


# --- Shape rules (pure; mirror what jax.nn.initializers accepts) ---------------------------


def format_shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _check_axes(flag: str, axes: Axes, shape: Sequence[int]) -> None:
    ndim = len(shape)
    for axis in (axes,) if isinstance(axes, int) else axes:
        if not -ndim <= axis < ndim:
            valid = f"{-ndim}..{ndim - 1}" if ndim else "none"
            raise UsageError(
                f"{flag} {axis}: out of range for the {ndim}-D shape {format_shape(shape)} "
                f"(valid axes: {valid})"
            )


def _axis_size(shape: Sequence[int], axes: Axes) -> int:
    if isinstance(axes, int):
        return shape[axes]
    return math.prod(shape[i] for i in axes)


def compute_fans(
    shape: Sequence[int], in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()
) -> tuple[float, float]:
    """Exactly ``jax.nn.initializers._compute_fans``: the same float arithmetic, same order."""
    if isinstance(in_axis, int) and in_axis == -2 and len(shape) <= 1:
        raise UsageError(
            f"cannot compute fans of the {len(shape)}-D shape {format_shape(shape)} with the "
            "default --in-axis; use a 2-D or larger shape, or give --in-axis and --out-axis"
        )
    for flag, axes in (
        ("--in-axis", in_axis),
        ("--out-axis", out_axis),
        ("--batch-axis", batch_axis),
    ):
        _check_axes(flag, axes, shape)
    in_size = _axis_size(shape, in_axis)
    out_size = _axis_size(shape, out_axis)
    batch_size = _axis_size(shape, batch_axis)
    try:
        receptive_field_size = math.prod(shape) / in_size / out_size / batch_size
    except ZeroDivisionError:
        raise UsageError(
            f"cannot compute fans of the zero-size shape {format_shape(shape)}; "
            "use a shape without zero dimensions, or zeros"
        ) from None
    return in_size * receptive_field_size, out_size * receptive_field_size


def variance(args: Mapping[str, Any], shape: Sequence[int]) -> float:
    """``scale / n`` as JAX computes it (a Python float, before conversion to the dtype)."""
    fan_in, fan_out = compute_fans(shape, args["in_axis"], args["out_axis"], args["batch_axis"])
    mode = args["mode"]
    denominator = {
        "fan_in": fan_in,
        "fan_out": fan_out,
        "fan_avg": (fan_in + fan_out) / 2,
        "fan_geo_avg": (fan_in * fan_out) ** 0.5,
    }[mode]
    if denominator == 0:
        raise UsageError(
            f"cannot use mode {mode} on the shape {format_shape(shape)}: its fan is zero"
        )
    return args["scale"] / denominator


def check_shape(init: Initializer, params: Mapping[str, Any], shape: Sequence[int]) -> None:
    """Refuse, with the reason, every shape JAX would refuse (or turn into NaNs) for ``init``."""
    args = init.family_args(params)
    if init.family == "variance_scaling":
        if args["scale"] < 0:
            raise UsageError(f"--scale {args['scale']}: must be positive (it is a variance)")
        variance(args, shape)
    elif init.family == "truncated_normal":
        if not args["lower"] < args["upper"]:
            raise UsageError(
                f"--lower {args['lower']} --upper {args['upper']}: lower must be below upper"
            )
    elif init.family == "orthogonal":
        if len(shape) < 2:
            raise UsageError(
                f"orthogonal needs a shape of at least 2 dimensions, got {format_shape(shape)}"
            )
        _check_axes("--column-axis", args["column_axis"], shape)
    elif init.family == "delta_orthogonal":
        if len(shape) not in (3, 4, 5):
            raise UsageError(
                f"delta-orthogonal needs a 3-, 4- or 5-D shape, got {format_shape(shape)}"
            )
        if shape[-1] < shape[-2]:
            raise UsageError(
                f"delta-orthogonal needs fan_in <= fan_out (shape[-2] <= shape[-1]), "
                f"got {format_shape(shape)}"
            )
        _check_axes("--column-axis", args["column_axis"], shape[-2:])
