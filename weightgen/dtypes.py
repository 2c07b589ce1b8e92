"""The dtypes weightgen writes, and how each file format stores them.

Imports numpy and ml_dtypes only (never JAX), so the CLI can validate ``--dtype`` cheaply.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from .errors import UsageError


@dataclass(frozen=True)
class DType:
    """A logical dtype and its storage in each format.

    ``storage`` is the numpy dtype used where a format has no such type (npz, HDF5): the same
    bits, reinterpreted, with the logical name recorded beside the data.
    """

    name: str
    numpy: np.dtype
    safetensors: str | None  # safetensors' dtype code; None where safetensors has none
    storage: np.dtype

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def is_complex(self) -> bool:
        return self.numpy.kind == "c"

    @property
    def needs_x64(self) -> bool:
        """JAX silently narrows 64-bit types unless ``jax_enable_x64`` is on."""
        return self.name in ("float64", "complex128")

    @property
    def is_half(self) -> bool:
        return self.name in ("float16", "bfloat16")

    @property
    def is_float8(self) -> bool:
        return self.name.startswith("float8")

    @property
    def numpy_native(self) -> bool:
        """True when plain numpy (npz, HDF5) knows the type; False for bfloat16 and float8."""
        return self.storage == self.numpy


def _entry(name: str, np_dtype, safetensors: str | None, storage=None) -> DType:
    dt = np.dtype(np_dtype)
    return DType(name, dt, safetensors, np.dtype(storage) if storage is not None else dt)


DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        _entry("float32", np.float32, "F32"),
        _entry("float64", np.float64, "F64"),
        _entry("float16", np.float16, "F16"),
        _entry("bfloat16", ml_dtypes.bfloat16, "BF16", np.uint16),
        _entry("float8_e4m3fn", ml_dtypes.float8_e4m3fn, "F8_E4M3", np.uint8),
        _entry("float8_e5m2", ml_dtypes.float8_e5m2, "F8_E5M2", np.uint8),
        _entry("complex64", np.complex64, "C64"),
        # safetensors has no 128-bit complex type.
        _entry("complex128", np.complex128, None),
    )
}

_ALIASES = {
    "f32": "float32",
    "fp32": "float32",
    "float": "float32",
    "f64": "float64",
    "fp64": "float64",
    "double": "float64",
    "f16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "e4m3": "float8_e4m3fn",
    "fp8_e4m3": "float8_e4m3fn",
    "float8_e4m3": "float8_e4m3fn",
    "e5m2": "float8_e5m2",
    "fp8_e5m2": "float8_e5m2",
    "c64": "complex64",
    "c128": "complex128",
}

_INTEGER_NAMES = {f"{p}int{b}" for p in ("", "u") for b in (4, 8, 16, 32, 64)} | {
    "int",
    "bool",
    "uint",
}

DTYPE_NAMES: tuple[str, ...] = tuple(DTYPES)


def get_dtype(name: str, *, option: str = "--dtype") -> DType:
    """Resolve a dtype name or alias; a clear UsageError otherwise."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in DTYPES:
        return DTYPES[key]
    if key in _INTEGER_NAMES:
        raise UsageError(
            f"{option} {name}: integer dtypes are not supported (initializers draw floats); "
            f"use one of {', '.join(DTYPE_NAMES)}"
        )
    close = difflib.get_close_matches(key, [*DTYPES, *_ALIASES], n=1)
    hint = f"did you mean {_ALIASES.get(close[0], close[0])}? " if close else ""
    raise UsageError(
        f"{option} {name}: unknown dtype; {hint}choose one of {', '.join(DTYPE_NAMES)}"
    )


# Types weightgen never writes but can read (inspect, verify, load of other tools' files).
_FOREIGN_SAFETENSORS = {
    "BOOL": np.bool_,
    "U8": np.uint8,
    "I8": np.int8,
    "U16": np.uint16,
    "I16": np.int16,
    "U32": np.uint32,
    "I32": np.int32,
    "U64": np.uint64,
    "I64": np.int64,
}


def from_safetensors_code(code: str) -> DType | None:
    """The dtype of a safetensors code, or None for a code weightgen cannot read."""
    for d in DTYPES.values():
        if d.safetensors == code:
            return d
    if code in _FOREIGN_SAFETENSORS:
        dt = np.dtype(_FOREIGN_SAFETENSORS[code])
        return DType(dt.name, dt, code, dt)
    return None


def from_numpy(dt: np.dtype) -> DType | None:
    """The dtype of a numpy array read from a file, or None when it is not numeric."""
    for d in DTYPES.values():
        if d.numpy == dt:
            return d
    if dt.kind in "biufc" and not dt.hasobject and dt.isnative:
        return DType(dt.name, dt, None, dt)
    return None
