"""What to generate: validated ``TensorSpec``s gathered in a ``Plan``.

Everything here is exact integer arithmetic and pure Python: a plan is checked (names, shapes,
axes, dtypes, sizes) before JAX is imported or a byte is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import initializers
from .dtypes import DType, get_dtype
from .errors import UsageError
from .initializers import Initializer, format_shape

MAX_DIM = 2**48  # a dimension this large is a typo, not a tensor
MAX_SEED = 2**32  # jax.random.key(seed) only agrees across x64 settings below this
DEFAULT_NAME = "weight"


def parse_shape(value: Any, *, label: str = "--shape") -> tuple[int, ...]:
    """``"3,3,64,128"`` or ``[3, 3, 64, 128]`` -> (3, 3, 64, 128); ``""`` or ``[]`` -> ()."""
    if isinstance(value, str):
        text = value.strip().strip("()[]").strip()
        parts = [p.strip() for p in text.split(",")] if text else []
        if parts and parts[-1] == "":  # allow a trailing comma, as in "(5,)"
            parts.pop()
        if not all(p.isdigit() and p.isascii() for p in parts):
            raise UsageError(
                f"{label}: expected comma-separated non-negative integers such as 3,3,64,128; "
                f"got {value!r}"
            )
        dims = [int(p) for p in parts]
    elif isinstance(value, (list, tuple)):
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
            raise UsageError(f"{label}: expected a list of non-negative integers, got {value!r}")
        dims = list(value)
    else:
        raise UsageError(f"{label}: expected a list of non-negative integers, got {value!r}")
    for d in dims:
        if d >= MAX_DIM:
            raise UsageError(f"{label}: dimension {d} is too large (the limit is 2**48)")
    return tuple(dims)


def parse_seed(value: Any, *, label: str = "--seed") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_SEED:
        raise UsageError(f"{label}: expected an integer from 0 to 2**32-1, got {value!r}")
    return value


def default_sample_dtype(init: Initializer, dtype: DType) -> DType:
    """The dtype values are drawn in when the user does not say.

    The dtype itself (JAX parity), except where JAX cannot draw usefully in it: float8 (JAX's
    8-bit draws are degenerate: he-normal in float8_e4m3fn gives one distinct value) and
    half-precision QR (no CPU kernel for orthogonal / delta-orthogonal).
    """
    if init.random and (dtype.is_float8 or (not init.elementwise and dtype.is_half)):
        return get_dtype("float32")
    return dtype


@dataclass(frozen=True)
class TensorSpec:
    """One tensor, fully resolved: everything needed to regenerate its bytes."""

    name: str
    init: Initializer
    params: Mapping[str, Any]  # JAX's keyword arguments for init, defaults filled in
    shape: tuple[int, ...]
    dtype: DType
    sample_dtype: DType
    seed: int
    fold_in: int | None = None  # key = fold_in(key(seed), fold_in) when set (spec key rule)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @property
    def needs_x64(self) -> bool:
        return self.dtype.needs_x64 or self.sample_dtype.needs_x64

    def describe(self) -> str:
        return f"tensor {self.name!r} {format_shape(self.shape)} {self.dtype.name}"


def make_tensor(
    init: str | Initializer,
    shape: Any,
    *,
    params: Mapping[str, Any] | None = None,
    dtype: str | DType = "float32",
    sample_dtype: str | DType | None = None,
    seed: int = 0,
    name: str = DEFAULT_NAME,
    fold_in: int | None = None,
    where: str = "",
) -> TensorSpec:
    """Validate one tensor request and resolve its defaults; UsageError on any problem."""
    entry = init if isinstance(init, Initializer) else initializers.lookup(init)
    dims = parse_shape(shape, label=f"{where}shape" if where else "--shape")
    dt = dtype if isinstance(dtype, DType) else get_dtype(dtype)
    if sample_dtype is None:
        sample = default_sample_dtype(entry, dt)
    else:
        sample = (
            sample_dtype
            if isinstance(sample_dtype, DType)
            else get_dtype(sample_dtype, option="--sample-dtype")
        )
    for label, d in (("--dtype", dt), ("--sample-dtype", sample)):
        if d.is_complex and not entry.complex_ok:
            raise UsageError(
                f"{where}{label} {d.name}: {entry.name} draws real values only (as in JAX); "
                "use normal, variance-scaling or its variants for complex weights"
            )
    if dt.is_complex != sample.is_complex:
        raise UsageError(
            f"{where}--sample-dtype {sample.name} cannot be rounded to --dtype {dt.name}: "
            "both must be real or both complex"
        )
    resolved = entry.resolve_params(params or {}, where=where)
    initializers.check_shape(entry, resolved, dims)
    return TensorSpec(
        name=name,
        init=entry,
        params=resolved,
        shape=dims,
        dtype=dt,
        sample_dtype=sample,
        seed=parse_seed(seed),
        fold_in=fold_in,
    )


@dataclass(frozen=True)
class Plan:
    """Tensors in file order (sorted by name, the order safetensors lays data out in)."""

    tensors: tuple[TensorSpec, ...]

    @classmethod
    def of(cls, tensors: Sequence[TensorSpec]) -> Plan:
        names = [t.name for t in tensors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise UsageError(f"tensor name {dupes[0]!r} is used twice")
        return cls(tuple(sorted(tensors, key=lambda t: t.name)))

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def needs_x64(self) -> bool:
        return any(t.needs_x64 for t in self.tensors)
