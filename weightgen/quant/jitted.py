"""The quantizer kernels in XLA: a band is drawn and quantized in one jitted computation.

Each function here does, on a float32 band, what its namesake in kernels.py does (the
reference the tests hold to transformers and compressed-tensors), byte for byte; the tests
compare the two on draws and on adversarial values. The engine traces one of them after the
band's draw (``quantizer``), so the float32 band never reaches the host: only the stored parts
do (codes, packed bytes and scales: a quarter to a half of the band's bytes).

What makes XLA's bytes the reference's:
- Casts to FP8 E4M3 and FP4 E2M1 are bit arithmetic (``_codes``): clamp, round the float32
  bits to the target's mantissa (nearest even), rebias; below the target's smallest normal a
  nearest-even round of a power-of-two multiple. No XLA convert to float8 is involved.
- Absolute maxima are integer maxima of the float32 bits without the sign (the same order
  as the floats'); XLA's CPU backend treats subnormal operands as zero (DAZ), a float max
  would not see them.
- A division by a constant is a runtime argument (``constants``): XLA's algebraic simplifier
  turns ``x / c`` into ``x * (1 / c)``, one rounding more. ``jnp.round`` is half-to-even.
- XLA's CPU backend flushes subnormal results to zero (FTZ) where numpy keeps them. That can
  move bytes only when a scale or a scale's inverse is near float32's subnormal range, that
  is when a group's absolute maximum is far from 1 (below 2**-64 or above 2**64: never in a
  draw) or a global scale is outside [2**-100, 2**100]. Every kernel returns ``exact``:
  false for such a band, which the caller then quantizes with kernels.py (the engine draws
  it again the reference way).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import kernels as K

_U32 = jnp.uint32
# Absolute maxima of a group outside [2**-64, 2**64] (as float32 bits) take the reference path.
_SAFE_LOW = np.uint32(np.float32(2.0**-64).view(np.uint32))
_SAFE_HIGH = np.uint32(np.float32(2.0**64).view(np.uint32))
# A global scale (ct-nvfp4) outside [2**-100, 2**100]: its group divisors, at least
# 2**-9 / global, could be subnormal.
_GLOBAL_LOW = np.uint32(np.float32(2.0**-100).view(np.uint32))
_GLOBAL_HIGH = np.uint32(np.float32(2.0**100).view(np.uint32))
_F32_MAX = np.float32(np.finfo(np.float32).max)


def _abs_bits(x: jax.Array) -> jax.Array:
    return lax.bitcast_convert_type(x, _U32) & _U32(0x7FFFFFFF)


def _as_f32(bits: jax.Array) -> jax.Array:
    return lax.bitcast_convert_type(bits, jnp.float32)


def _amax_bits(x: jax.Array, axis) -> jax.Array:
    """Per group, the float32 bits of the absolute maximum (an integer max: exact, and blind
    to nothing, subnormals included)."""
    return jnp.max(_abs_bits(x), axis=axis)


def _unsafe(amax_bits: jax.Array) -> jax.Array:
    """Whether any nonzero group maximum lies where flushing could move a byte (or is not
    finite)."""
    return jnp.any((amax_bits != 0) & ((amax_bits < _SAFE_LOW) | (amax_bits > _SAFE_HIGH)))


def _codes(x: jax.Array, *, mantissa: int, exponent: int, bias: int, largest: float) -> jax.Array:
    """float32 -> the codes of a small float format (sign, ``exponent`` bits, ``mantissa``
    bits, no infinities), nearest even, saturating at ``largest``: ml_dtypes' cast of the
    clamped value, as kernels._code_table gives it. -0 and negatives that round to 0 keep
    their sign bit, as there."""
    bits = lax.bitcast_convert_type(x, _U32)
    sign = (bits >> 31).astype(jnp.uint8) << (exponent + mantissa)
    a = jnp.minimum(_as_f32(bits & _U32(0x7FFFFFFF)), np.float32(largest))
    emin = 1 - bias  # the smallest normal's exponent
    # Normal: round the float32 bits to ``mantissa`` bits (ties to even), then rebias.
    shift = 23 - mantissa
    abits = lax.bitcast_convert_type(a, _U32)
    lsb = (abits >> shift) & _U32(1)
    rounded = (abits + _U32((1 << (shift - 1)) - 1) + lsb) >> shift
    normal = rounded - _U32((127 - bias) << mantissa)
    # Below the smallest normal: multiples of 2**(emin - mantissa), exact in float32.
    steps = jnp.round(a * np.float32(2.0 ** (mantissa - emin))).astype(_U32)
    magnitude = jnp.where(a < np.float32(2.0**emin), steps, normal)
    return magnitude.astype(jnp.uint8) | sign


def _e4m3(x: jax.Array) -> jax.Array:
    return _codes(x, mantissa=3, exponent=4, bias=7, largest=K.FP8_E4M3_MAX)


def _e2m1(x: jax.Array) -> jax.Array:
    return _codes(x, mantissa=1, exponent=2, bias=1, largest=K.E2M1_MAX)


def _pack_nibbles(codes: jax.Array) -> jax.Array:
    pairs = codes.reshape(*codes.shape[:-1], codes.shape[-1] // 2, 2)
    return pairs[..., 0] | (pairs[..., 1] << 4)


def _divide(a: jax.Array, b: jax.Array) -> jax.Array:
    """IEEE ``a / b`` with ``b`` broadcast to ``a``'s shape. XLA's algebraic simplifier
    rewrites a division by a broadcast (a scalar, a group's scale) as a multiplication by
    the reciprocal, one rounding more (measured: half the quotients differ); the barrier
    keeps the broadcast whole so the division stays one."""
    full = lax.optimization_barrier(jnp.broadcast_to(b, a.shape))
    return a / full


def _groups(w: jax.Array, group: int) -> jax.Array:
    return w.reshape(*w.shape[:-1], w.shape[-1] // group, group)


def _stored_scale(scale: jax.Array, dtype: np.dtype) -> tuple[jax.Array, jax.Array]:
    """kernels._stored_scale: zeros become float32's epsilon, then the dtype's value."""
    import ml_dtypes

    info = ml_dtypes.finfo(dtype)
    scale = jnp.where(scale == 0, np.float32(np.finfo(np.float32).eps), scale)
    stored = jnp.minimum(scale, np.float32(info.max)).astype(dtype)
    stored = jnp.where(stored == 0, jnp.asarray(info.smallest_subnormal, dtype), stored)
    return stored, stored.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# the kernels: (band, constants, global scale) -> (exact, parts...)
# ---------------------------------------------------------------------------------------------


def fp8_block(w, constants, global_scale, *, block=(128, 128)):
    br, bc = block
    rows, cols = w.shape
    grid_r, grid_c = math.ceil(rows / br), math.ceil(cols / bc)
    pad_r, pad_c = grid_r * br - rows, grid_c * bc - cols
    padded = jnp.pad(w, ((0, pad_r), (0, pad_c))) if pad_r or pad_c else w
    tiles = padded.reshape(grid_r, br, grid_c, bc)
    # Along each row's block first (contiguous: fused with the read), then down the rows;
    # reduced over both axes at once, XLA materializes the band's bits for a reduce-window.
    amax_bits = jnp.max(_amax_bits(tiles, 3), axis=1)
    amax = _as_f32(amax_bits)
    scale = (np.float32(1.0) / amax) * np.float32(K.FP8_E4M3_MAX)
    scale = jnp.where(amax_bits != 0, jnp.minimum(scale, _F32_MAX), np.float32(1.0))
    scale_inv = np.float32(1.0) / scale
    q = _e4m3(tiles * scale[:, None, :, None]).reshape(padded.shape)
    if pad_r or pad_c:
        q = q[:rows, :cols]
    return ~_unsafe(amax_bits), q, scale_inv


def mxfp4(w, constants, global_scale):
    """``w`` [..., in, out] as gpt-oss draws it (kernels.mxfp4 takes the transpose
    [..., out, in]); constants[0] = 6. The groups of 32 run down the columns here, and only
    the packed bytes and scales are transposed (a float32 transpose of an expert cost more
    than its quantization)."""
    *lead, inner, outer = w.shape
    columns = (*lead, inner // K.MXFP4_GROUP, K.MXFP4_GROUP, outer)
    rounded_w = w.astype(jnp.bfloat16).astype(jnp.float32).reshape(columns)
    amax_bits = _amax_bits(rounded_w, -2)  # [..., in/32, out]
    # The input's own maxima decide the check: a bfloat16 rounding keeps them in range.
    exact = ~_unsafe(_amax_bits(w.reshape(columns), -2))
    bits = lax.bitcast_convert_type(_divide(_as_f32(amax_bits), constants[0]), _U32)
    rounded = (bits + _U32(0x007FFFFF)) & _U32(0x7F800000)
    inv = jnp.where(rounded == 0, np.float32(0.0), np.float32(1.0) / _as_f32(rounded))
    codes = _e2m1(rounded_w * inv[..., None, :])  # [..., in/32, 32, out]
    pairs = codes.reshape(*lead, inner // K.MXFP4_GROUP, K.MXFP4_GROUP // 2, 2, outer)
    packed = pairs[..., 0, :] | (pairs[..., 1, :] << 4)  # [..., in/32, 16, out]
    blocks = jnp.moveaxis(packed, -1, -3)  # [..., out, in/32, 16]
    scales = jnp.swapaxes((rounded >> 23).astype(jnp.uint8), -1, -2)  # [..., out, in/32]
    return exact, blocks, scales


def ct_fp8(w, constants, global_scale, *, scale_dtype="bfloat16"):
    """constants[0] = 448."""
    amax_bits = _amax_bits(w, -1)[..., None]
    scale = _divide(_as_f32(amax_bits), constants[0])
    stored, divisor = _stored_scale(scale, K._scale_dtype(scale_dtype))
    return ~_unsafe(amax_bits), _e4m3(_divide(w, divisor)), stored


def ct_w4a16(w, constants, global_scale, *, group=K.W4A16_GROUP, scale_dtype="bfloat16"):
    """constants[0] = 7.5."""
    groups = _groups(w, group)
    amax_bits = _amax_bits(groups, -1)
    scale = _divide(_as_f32(amax_bits), constants[0])
    stored, divisor = _stored_scale(scale, K._scale_dtype(scale_dtype))
    q = jnp.round(jnp.clip(_divide(groups, divisor[..., None]), K.INT4_MIN, K.INT4_MAX))
    nibbles = (q.astype(jnp.int32) + 8).astype(_U32).reshape(*w.shape[:-1], -1, 8)
    shifts = jnp.arange(0, 32, 4, dtype=_U32)
    words = jnp.sum(nibbles << shifts, axis=-1, dtype=_U32)  # disjoint bits: sum is or
    return ~_unsafe(amax_bits), lax.bitcast_convert_type(words, jnp.int32), stored


def ct_nvfp4(w, constants, global_scale):
    """constants[0] = 6; ``global_scale`` the weight's (float32 scalar)."""
    groups = _groups(w, K.NVFP4_GROUP)
    amax_bits = _amax_bits(groups, -1)
    g = global_scale
    scale = _e4m3(g * _divide(_as_f32(amax_bits), constants[0]))
    scale_f32 = lax.bitcast_convert_type(scale, jnp.float8_e4m3fn).astype(jnp.float32)
    scale_f32 = jnp.where(scale_f32 == 0, np.float32(0.125), scale_f32)
    scale_fp8 = _e4m3(scale_f32)
    divisor = _divide(scale_f32, g)
    codes = _e2m1(_divide(groups, divisor[..., None]))
    g_bits = _abs_bits(g)
    exact = ~_unsafe(amax_bits) & (g_bits >= _GLOBAL_LOW) & (g_bits <= _GLOBAL_HIGH)
    return exact, _pack_nibbles(codes.reshape(w.shape)), scale_fp8


# The runtime constants each kernel divides by (kept out of XLA's constant folding).
_CONSTANTS = {
    "fp8_block": (1.0,),
    "mxfp4": (K.E2M1_MAX,),
    "ct_fp8": (K.FP8_E4M3_MAX,),
    "ct_w4a16": (float(K._INT4_HALF_RANGE),),
    "ct_nvfp4": (K.E2M1_MAX,),
}


def constants(kernel: str) -> np.ndarray:
    return np.array(_CONSTANTS[kernel], np.float32)


def quantizer(scheme) -> Callable:
    """``f(band, constants, global_scale) -> (exact, parts...)`` for a quant.Scheme, traced
    inside a jit: ``band`` float32 in the logical layout, parts flat, in the order of the
    format's drawn parts."""
    fmt = scheme.format
    kernel = globals()[fmt.kernel]
    args = fmt.kernel_args(scheme.values)

    def run(band, consts, global_scale):
        # A format that takes the transpose (mxfp4) gets the band as drawn: its kernel here
        # transposes what it stores, not the float32 band.
        exact, *parts = kernel(band, consts, global_scale, **args)
        return exact, *(p.reshape(-1) for p in parts)

    return run


def absmax(values: jax.Array) -> jax.Array:
    """The absolute maximum of ``values`` as float32 (exact: an integer max of the bits)."""
    return _as_f32(jnp.max(_abs_bits(values.astype(jnp.float32))))


def quantize(scheme, band: np.ndarray, global_scale=None) -> tuple[bool, dict[str, np.ndarray]]:
    """A band (host float32) through the jitted kernel, for tests and callers with values in
    hand: (exact, {suffix: flat part in its stored dtype}). Not exact: the parts may differ
    from kernels.py's, use ``scheme.quantize_band``."""
    run = jax.jit(quantizer(scheme))
    g = np.float32(1.0 if global_scale is None else global_scale)
    exact, *parts = run(np.asarray(band, np.float32), constants(scheme.format.kernel), g)
    return bool(exact), host_parts(scheme, parts)


def host_parts(scheme, parts) -> dict[str, np.ndarray]:
    """A kernel's parts (device arrays) on the host in their stored dtypes, by suffix."""
    drawn = [p for p in scheme.format.parts if p.role not in ("constant", "global")]
    out = {}
    for part, array in zip(drawn, parts):
        host = np.asarray(array)
        dtype = scheme.dtype(part).numpy
        out[part.suffix] = host if host.dtype == dtype else host.view(dtype)
    return out
