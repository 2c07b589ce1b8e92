"""What to generate: validated ``TensorSpec``s gathered in a ``Plan``.

Everything here is exact integer arithmetic and pure Python: a plan is checked (names, shapes,
axes, dtypes, sizes) before JAX is imported or a byte is written.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import initializers
from .dtypes import DType, get_dtype
from .errors import UsageError
from .initializers import AppliedTransform, Initializer, format_shape

MAX_DIM = 2**48  # a dimension this large is a typo, not a tensor
MAX_NDIM = 32  # HDF5's limit, and far beyond any weight
MAX_SEED = 2**32  # jax.random.key(seed) only agrees across x64 settings below this
MAX_NAME = 1024
DEFAULT_NAME = "weight"
# Unicode's control characters (category Cc) and surrogates (Cs), exactly: one regex search
# instead of a category lookup per character (a plan of 70,000 names checks in milliseconds).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
RESERVED_NAMES = ("__metadata__",)  # the safetensors header's own key


def check_name(name: object, *, label: str = "--name") -> str:
    """A tensor name that every format stores as given and no path trick can abuse."""
    if not isinstance(name, str) or not name:
        raise UsageError(f"{label}: a tensor name must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME:
        raise UsageError(f"{label}: tensor name longer than {MAX_NAME} characters")
    if _CONTROL.search(name):
        raise UsageError(f"{label} {name!r}: control characters are not allowed in a name")
    if name.startswith("/") or name.endswith("/"):
        raise UsageError(f"{label} {name!r}: a name may not start or end with '/'")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise UsageError(f"{label} {name!r}: empty, '.' and '..' path segments are not allowed")
    if name in RESERVED_NAMES:
        raise UsageError(f"{label} {name!r}: the name is reserved by safetensors")
    return name


def name_fold_in(name: str) -> int:
    """The key rule's fold-in value: the first 4 bytes of sha256(name), little-endian."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "little")


def parse_shape(value: Any, *, label: str = "--shape") -> tuple[int, ...]:
    """``"3,3,64,128"`` or ``[3, 3, 64, 128]`` -> (3, 3, 64, 128); ``""`` or ``[]`` -> ()."""
    if isinstance(value, str):
        text = value.strip().strip("()[]").strip()
        parts = [p.strip() for p in text.split(",", MAX_NDIM + 1)] if text else []
        if parts and parts[-1] == "":  # allow a trailing comma, as in "(5,)"
            parts.pop()
    elif isinstance(value, (list, tuple)):
        parts = list(value[: MAX_NDIM + 1])
    else:
        raise UsageError(f"{label}: expected a list of non-negative integers, got {value!r}")
    if len(parts) > MAX_NDIM:
        raise UsageError(f"{label}: more than {MAX_NDIM} dimensions are not supported")
    dims = []
    for part in parts:
        if isinstance(part, str) and part.isascii() and part.isdigit():
            if len(part) > 20:
                raise UsageError(f"{label}: dimension {part[:20]}... is too large")
            dims.append(int(part))
        elif isinstance(part, int) and not isinstance(part, bool) and part >= 0:
            dims.append(part)
        else:
            raise UsageError(
                f"{label}: expected comma-separated non-negative integers such as 3,3,64,128; "
                f"got {_short(value)}"
            )
        if dims[-1] >= MAX_DIM:
            raise UsageError(f"{label}: dimension {dims[-1]} is too large (the limit is 2**48)")
    return tuple(dims)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
    zero_rows: tuple[int, ...] = ()  # init(...).at[rows].set(0): rows along axis 0, sorted
    transform: AppliedTransform | None = None  # an elementwise map after drawing (A_log's log)
    # A stored part of a quantized weight (its scales, its packed values): made from the
    # logical tensor's draw by the format's quantizer (quant/), never drawn itself.
    quant: QuantPart | None = None

    # Computed once (cached_property writes past the frozen dataclass): a plan or a file of
    # 70,000 tensors asks for its sizes often.
    @functools.cached_property
    def numel(self) -> int:
        return math.prod(self.shape)

    @functools.cached_property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @property
    def needs_x64(self) -> bool:
        return self.dtype.needs_x64 or self.sample_dtype.needs_x64

    def describe(self) -> str:
        return f"tensor {self.name!r} {format_shape(self.shape)} {self.dtype.name}"


@dataclass(frozen=True)
class QuantPart:
    """What a stored part of a quantized weight is made from: the logical tensor (its init
    rule and logical shape, drawn in float32), the scheme (quant.Scheme) and which part."""

    logical: TensorSpec
    scheme: Any
    suffix: str  # the part's name suffix ("" for a weight that keeps its name)
    # A format with a global part (ct-nvfp4): the label of the weights that share it (a
    # spec's ``fused``: q/k/v, gate/up) and their logical tensors, this one included. The
    # global part is made from the absolute maximum of all of their draws.
    fused: str | None = None
    group: Sequence[TensorSpec] = ()  # shared by the group's parts (filled as it is parsed)

    @property
    def members(self) -> tuple[TensorSpec, ...]:
        """The logical tensors whose draws make the global part: the group, or this one."""
        return tuple(self.group) or (self.logical,)


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
    zero_rows: Any = (),
    transform: Any = None,
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
    applied = initializers.parse_transform(transform, where=where)
    if applied is not None:
        if dt.is_complex:
            raise UsageError(f"{where}transform {applied.name}: real dtypes only, got {dt.name}")
        try:
            initializers.check_transform(entry, resolved, applied)
        except UsageError as exc:
            raise UsageError(f"{where}{exc}") from None
    return TensorSpec(
        name=check_name(name, label=f"{where}name" if where else "--name"),
        init=entry,
        params=resolved,
        shape=dims,
        dtype=dt,
        sample_dtype=sample,
        seed=parse_seed(seed),
        fold_in=fold_in,
        zero_rows=parse_zero_rows(zero_rows, dims, label=f"{where}zero_rows"),
        transform=applied,
    )


def parse_zero_rows(value: Any, shape: tuple[int, ...], *, label: str) -> tuple[int, ...]:
    """Row indices along axis 0 (negative ones count from the end, as in ``.at[rows]``),
    normalised, deduplicated and sorted; every one must exist (JAX would drop it silently)."""
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return ()
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(r, int) and not isinstance(r, bool) for r in value
    ):
        raise UsageError(
            f"{label}: expected a list of row indices such as [0], got {_short(value)}"
        )
    if not shape:
        raise UsageError(f"{label}: a scalar has no rows")
    rows = set()
    for row in value:
        if not -shape[0] <= row < shape[0]:
            raise UsageError(
                f"{label}: row {row} is outside axis 0 of the shape {format_shape(shape)}"
            )
        rows.add(row % shape[0])
    return tuple(sorted(rows))


@dataclass(frozen=True)
class TensorRange:
    """A flat element range of one tensor of a plan: the unit of work one writer takes."""

    index: int  # the tensor's position in the plan
    start: int
    stop: int


@dataclass(frozen=True)
class Plan:
    """Tensors in file order (sorted by name, the order safetensors lays data out in)."""

    tensors: tuple[TensorSpec, ...]

    @classmethod
    def of(cls, tensors: Sequence[TensorSpec]) -> Plan:
        ordered = tuple(sorted(tensors, key=lambda t: t.name))
        names = {t.name for t in ordered}
        for before, after in itertools.pairwise(ordered):
            if before.name == after.name:
                raise UsageError(f"tensor name {before.name!r} is used twice")
        for name in names:  # 'a' and 'a/b' cannot both exist as HDF5 dataset and group
            parts = name.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in names:
                    raise UsageError(
                        f"tensor names {'/'.join(parts[:i])!r} and {name!r} clash: one would "
                        "be a group holding the other; rename one"
                    )
        return cls(ordered)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def needs_x64(self) -> bool:
        return any(t.needs_x64 for t in self.tensors)

    def shares(self, count: int, block_bytes: int) -> list[list[TensorRange]]:
        """The work of ``count`` writers: the plan's bytes (tensors in file order) cut into
        ``count`` contiguous shares of about equal size, at block boundaries inside a tensor
        (so each writer hashes whole blocks) or at the ends of a tensor computed whole. The
        same plan and count give the same shares in every process."""
        total = self.nbytes
        cuts, base = [0], 0
        targets = [total * p // count for p in range(1, count)]
        for t in self.tensors:
            end = base + t.nbytes
            while targets and targets[0] <= end:
                target = targets.pop(0)
                if t.init.elementwise and t.quant is None:
                    step = block_bytes // t.dtype.itemsize * t.dtype.itemsize
                    cut = base + min(t.nbytes, round((target - base) / step) * step)
                else:  # one piece: QR needs the whole tensor; quantized parts go whole
                    cut = base if target - base < end - target else end
                cuts.append(max(cut, cuts[-1]))
            base = end
        cuts += [total] * (count + 1 - len(cuts))
        shares: list[list[TensorRange]] = [[] for _ in range(count)]
        base = 0
        for index, t in enumerate(self.tensors):
            for writer in range(count):
                low, high = max(base, cuts[writer]), min(base + t.nbytes, cuts[writer + 1])
                if low < high:
                    size = t.dtype.itemsize
                    shares[writer].append(
                        TensorRange(index, (low - base) // size, (high - base) // size)
                    )
            base += t.nbytes
        return shares
