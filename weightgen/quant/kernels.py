"""Quantizer kernels: a float32 band of rows in, the tensors a format stores out.

Each kernel is a pure numpy / ml_dtypes function that does, byte for byte, what the format's
own reference quantizer does to the same float32 array (the tests compare them):

- ``fp8_block``: transformers 5.24.0 ``integrations/finegrained_fp8.py``,
  ``Fp8Quantize._quantize_one`` (DeepSeek-V3/R1, Kimi-K2, Qwen3-FP8, GLM-4.5-FP8 layout).
- ``mxfp4``: transformers 5.24.0 ``integrations/mxfp4.py``, ``quantize_to_mxfp4``, which casts
  to bfloat16 and calls triton_kernels' ``downcast_to_mxfp_torch`` (ROUND_UP scales; gpt-oss).
- ``ct_fp8``, ``ct_w4a16``, ``ct_nvfp4``: compressed-tensors 0.20.0's ``calculate_qparams`` /
  ``generate_gparam`` (quantization/utils/helpers.py) for the scales, then its compressors
  (``float-quantized``, ``pack-quantized``, ``nvfp4-pack-quantized``) for the bytes.

Streaming: a kernel sees one band of whole blocks or groups of rows and never the whole tensor.
Concatenating the bands' outputs along the rows gives the whole tensor's output, so bytes do
not depend on the band size. ``fp8_block`` needs bands of whole block rows (a multiple of the
block height; only the tensor's last band may be shorter); the others quantize along the last
axis and take any number of rows. The one exception is ``ct_nvfp4``'s global scale, which
needs the whole tensor's absolute maximum: a writer makes a cheap first pass over the tensor's
bands (draw, ``absmax``, discard: generation only, nothing kept, nothing written), turns the
maximum into ``nvfp4_global_scale`` and passes it to every band of the second pass. The
maximum is exact and order-free, so the global scale is the same on any band size or process
count. Where an engine fuses modules (vLLM fuses q/k/v and gate/up and wants one global scale
for them, as llm-compressor's ``update_fused_layer_weight_global_scales`` writes), the first
pass takes the maximum over the fused group.

Every scale a kernel returns is valid: finite and positive, no E8M0 byte 0xFF, no FP8 NaN;
all-zero blocks get the reference's fallback scale (1, the dtype's epsilon or 0.125), never 0.
Rounding is to nearest, ties to even, and saturating (values are clamped to the format's
largest finite value before the cast), as in every reference above.
"""

from __future__ import annotations

import functools
import math

import ml_dtypes
import numpy as np

from ..errors import UsageError

FP8_E4M3_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
E2M1_MAX = 6.0  # the largest FP4 E2M1 value
E8M0_BIAS = 127
E8M0_NAN = 0xFF
MXFP4_GROUP = 32  # values per E8M0 scale (OCP MX block)
NVFP4_GROUP = 16  # values per FP8 scale (compressed-tensors NVFP4 preset)
W4A16_GROUP = 128  # compressed-tensors W4A16 preset
INT4_MIN, INT4_MAX = -8, 7
_INT4_HALF_RANGE = np.float32(7.5)  # compressed-tensors: (q_max - q_min) / 2
_NVFP4_EPS = np.float32(0.125)  # compressed-tensors _get_dtype_eps(float8_e4m3fn)
_F32_TINY = np.float32(np.finfo(np.float32).tiny)

# The sixteen E2M1 codes' values, sign in bit 3 (as transformers' FP4_VALUES).
E2M1_VALUES = np.array(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
    dtype=np.float32,
)

# Scale dtypes a compressed-tensors scale may be stored in: llm-compressor gives a layer's
# scale the dtype of the weight it observed (initialize.py: bfloat16 for bfloat16 models).
SCALE_DTYPES = {
    "float32": np.dtype(np.float32),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float16": np.dtype(np.float16),
}


def _f32(w) -> np.ndarray:
    a = np.asarray(w)
    if a.dtype != np.float32:
        raise UsageError(f"quantizer input must be float32, got {a.dtype}")
    return a


def _need_2d(w: np.ndarray, what: str) -> None:
    if w.ndim < 2:
        raise UsageError(f"{what} quantizes a matrix [rows, columns], got shape {w.shape}")


def _groups(w: np.ndarray, group: int, what: str) -> np.ndarray:
    """View the last axis as [..., K // group, group]; K must be a multiple of the group."""
    if w.ndim < 1 or w.shape[-1] % group:
        raise UsageError(
            f"{what} needs the last dimension to be a multiple of {group}, got shape {w.shape}"
        )
    return w.reshape(*w.shape[:-1], w.shape[-1] // group, group)


def _absmax(groups: np.ndarray) -> np.ndarray:
    """The absolute maximum of each group (last axis), float32."""
    return np.abs(groups).max(axis=-1)


def absmax(w) -> float:
    """The absolute maximum of a band: the first pass of ``ct_nvfp4``'s global scale."""
    a = _f32(w)
    return float(max(a.max(initial=0.0), -a.min(initial=0.0)))


@functools.cache
def _code_table(dtype_name: str, largest: float) -> np.ndarray:
    """uint8 codes of ml_dtypes' saturating cast for every float32 whose bits are
    ``i << 15``, i < 2**17: the sign, exponent and top 8 mantissa bits of any float32.

    Nearest-even rounding to at most 3 mantissa bits depends on those bits and on whether
    any lower bit is set (the sticky bit), so ``table[(bits >> 15) | (bits & 0x7FFF != 0)]``
    is the cast of any float32: checked against ml_dtypes for all 2**32 inputs (0 differences
    for E4M3 and E2M1). About twice as fast as ml_dtypes' element-by-element cast, and the
    clamp comes free (jitted.py does the same by bit arithmetic on the device).
    """
    values = (np.arange(1 << 17, dtype=np.uint32) << 15).view(np.float32)
    with np.errstate(invalid="ignore"):  # the NaN patterns: never drawn
        clipped = np.clip(values, np.float32(-largest), np.float32(largest))
        return clipped.astype(getattr(ml_dtypes, dtype_name)).view(np.uint8)


def _cast_codes(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """float32 -> uint8 codes through a ``_code_table``, nearest even, saturating."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    index = bits >> 15
    index |= (bits & np.uint32(0x7FFF)) != 0
    return table[index]


def _round_e4m3(x: np.ndarray) -> np.ndarray:
    """float32 -> FP8 E4M3, nearest even, saturating at +-448 (never NaN)."""
    table = _code_table("float8_e4m3fn", FP8_E4M3_MAX)
    return _cast_codes(x, table).view(ml_dtypes.float8_e4m3fn)


# ---------------------------------------------------------------------------------------------
# fp8-block: FP8 E4M3 weight + float32 weight_scale_inv, one per [128, 128] block
# ---------------------------------------------------------------------------------------------


def fp8_block(w, block: tuple[int, int] = (128, 128)) -> tuple[np.ndarray, np.ndarray]:
    """Quantize ``w[..., R, C]`` in blocks: (``weight`` E4M3 [..., R, C], ``weight_scale_inv``
    float32 [..., ceil(R/br), ceil(C/bc)]).

    As transformers' ``Fp8Quantize``: per block ``scale = 448 / absmax`` (1 for an all-zero
    block), ``scale_inv = 1 / scale``, ``weight = e4m3(clamp(w * scale))``. Partial edge blocks
    (576 rows in 128-row blocks) take the scale of the rows they have, as DeepSeek-V3's
    published ``kv_a_proj_with_mqa`` does (scale grid [5, 56] for [576, 7168]); transformers'
    own quantizer leaves such a weight unquantized. A block whose 448 / absmax would overflow
    float32 (absmax below 1.3e-36) gets the largest finite scale instead of infinity.
    """
    w = _f32(w)
    _need_2d(w, "fp8_block")
    br, bc = (int(b) for b in block)
    if br < 1 or bc < 1:
        raise UsageError(f"fp8_block: block must be two positive integers, got {block}")
    *lead, rows, cols = w.shape
    grid_r, grid_c = math.ceil(rows / br), math.ceil(cols / bc)
    pad_r, pad_c = grid_r * br - rows, grid_c * bc - cols
    # Zeros never raise an absolute maximum, so padded edge blocks take their real rows' scale.
    padded = np.pad(w, [(0, 0)] * len(lead) + [(0, pad_r), (0, pad_c)]) if pad_r or pad_c else w
    tiles = padded.reshape(*lead, grid_r, br, grid_c, bc)
    amax = np.abs(tiles).max(axis=(-3, -1))
    # torch evaluates ``448.0 / amax`` as ``reciprocal(amax) * 448``: one rounding more than a
    # division, and the bytes follow it.
    with np.errstate(divide="ignore", over="ignore"):
        scale = (np.float32(1.0) / amax) * np.float32(FP8_E4M3_MAX)
    scale = np.where(amax > 0, np.minimum(scale, np.finfo(np.float32).max), np.float32(1.0))
    scale = scale.astype(np.float32)
    scale_inv = (np.float32(1.0) / scale).astype(np.float32)
    scaled = tiles * scale[..., :, None, :, None]
    q = _round_e4m3(scaled).reshape(padded.shape)
    if pad_r or pad_c:
        q = q[..., :rows, :cols]
    return np.ascontiguousarray(q), scale_inv


def dequantize_fp8_block(q, scale_inv, block: tuple[int, int] = (128, 128)) -> np.ndarray:
    """float32 ``weight * weight_scale_inv``, each scale over its block (partial edges too)."""
    q = np.asarray(q)
    s = np.asarray(scale_inv, dtype=np.float32)
    br, bc = block
    rows, cols = q.shape[-2:]
    full = np.repeat(np.repeat(s, br, axis=-2), bc, axis=-1)[..., :rows, :cols]
    return q.astype(np.float32) * full


# ---------------------------------------------------------------------------------------------
# mxfp4: gpt-oss experts, FP4 E2M1 pairs + E8M0 scales per 32 values
# ---------------------------------------------------------------------------------------------


def _e2m1_codes(x: np.ndarray) -> np.ndarray:
    """float32 (already within +-6) -> E2M1 codes 0..15, nearest even, sign kept for -0."""
    return _cast_codes(x, _code_table("float4_e2m1fn", E2M1_MAX))


def _pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """Pairs along the last axis into one byte each: the even element in the low nibble."""
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def _unpack_nibbles(packed: np.ndarray) -> np.ndarray:
    packed = np.asarray(packed, dtype=np.uint8)
    out = np.empty((*packed.shape[:-1], packed.shape[-1] * 2), dtype=np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out


def mxfp4(w) -> tuple[np.ndarray, np.ndarray]:
    """Quantize ``w[..., K]`` along its last axis: (``_blocks`` uint8 [..., K/32, 16],
    ``_scales`` uint8 [..., K/32], E8M0 with bias 127).

    As transformers' ``quantize_to_mxfp4``: round to bfloat16 first, then per 32 values
    ``scale = 2**ceil(log2(absmax / 6))`` (triton_kernels ROUND_UP: no value is clipped; an
    all-zero group gets byte 0), ``code = e2m1(value / scale)``. The byte never reaches 0xFF:
    a finite absmax / 6 is below 2**126. gpt-oss stores ``gate_up_proj`` [E, H, 2I] as
    ``[E, 2I, H/32, 16]``: pass the transposed ``[E, 2I, H]``.
    """
    w = _f32(w)
    groups = _groups(w.astype(ml_dtypes.bfloat16).astype(np.float32), MXFP4_GROUP, "mxfp4")
    amax = _absmax(groups)
    # 2**ceil(log2(x)) on the float32 bits: add the mantissa mask, keep the exponent.
    bits = (amax / np.float32(E2M1_MAX)).view(np.uint32)
    rounded = (bits + np.uint32(0x007FFFFF)) & np.uint32(0x7F800000)
    scale = rounded.view(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(rounded == 0, np.float32(0.0), np.float32(1.0) / scale)
    codes = _e2m1_codes(groups * inv[..., None].astype(np.float32))
    blocks = _pack_nibbles(codes)
    scales = (rounded >> 23).astype(np.uint8)
    return blocks, scales


def dequantize_mxfp4(blocks, scales) -> np.ndarray:
    """float32 [..., K] from ``_blocks`` [..., K/32, 16] and ``_scales`` [..., K/32]."""
    codes = _unpack_nibbles(blocks)
    values = E2M1_VALUES[codes]
    exp = np.asarray(scales, dtype=np.int32) - E8M0_BIAS
    out = np.ldexp(values, exp[..., None]).astype(np.float32)
    return out.reshape(*out.shape[:-2], out.shape[-2] * out.shape[-1])


# ---------------------------------------------------------------------------------------------
# compressed-tensors: float-quantized (ct-fp8), pack-quantized (ct-w4a16), nvfp4-pack-quantized
# ---------------------------------------------------------------------------------------------


def _scale_dtype(name: str) -> np.dtype:
    try:
        return SCALE_DTYPES[name]
    except KeyError:
        raise UsageError(f"scale dtype {name!r} is not one of {', '.join(SCALE_DTYPES)}") from None


def _stored_scale(scale: np.ndarray, scale_dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """A float32 scale with zeros replaced (compressed-tensors: float32's epsilon), rounded to
    the dtype it is stored in: (stored, the float32 value quantization divides by)."""
    dtype = _scale_dtype(scale_dtype)
    scale = np.where(scale == 0, np.finfo(np.float32).eps, scale).astype(np.float32)
    # Where the reference would store an invalid scale (one that rounds to 0 or overflows in
    # a narrower dtype: absmax below about 1e-38, or in float16 above about 3e7), store the
    # dtype's nearest valid value instead; quantization then saturates.
    info = ml_dtypes.finfo(dtype)
    stored = np.minimum(scale, np.float32(info.max)).astype(dtype)
    stored = np.where(stored == 0, info.smallest_subnormal, stored).astype(dtype)
    return stored, stored.astype(np.float32)


def ct_fp8(w, scale_dtype: str = "bfloat16") -> tuple[np.ndarray, np.ndarray]:
    """Quantize ``w[..., R, C]`` per output channel: (``weight`` E4M3 [..., R, C],
    ``weight_scale`` [..., R, 1] in ``scale_dtype``).

    compressed-tensors ``FP8_DYNAMIC`` weights (channel strategy, symmetric):
    ``scale = absmax(row) / 448`` (an all-zero row: float32's epsilon), stored in the
    model's dtype, then ``weight = e4m3(clamp(w / scale))`` with the stored scale.
    """
    w = _f32(w)
    _need_2d(w, "ct_fp8")
    amax = _absmax(w)[..., None]
    stored, divisor = _stored_scale(amax / np.float32(FP8_E4M3_MAX), scale_dtype)
    q = _round_e4m3(w / divisor)
    return q, stored


def dequantize_ct_fp8(q, scale) -> np.ndarray:
    return np.asarray(q).astype(np.float32) * np.asarray(scale).astype(np.float32)


def ct_w4a16(
    w, group: int = W4A16_GROUP, scale_dtype: str = "bfloat16"
) -> tuple[np.ndarray, np.ndarray]:
    """Quantize ``w[..., R, C]`` to int4 in groups of ``group`` columns: (``weight_packed``
    int32 [..., R, C/8], ``weight_scale`` [..., R, C/group] in ``scale_dtype``).

    compressed-tensors ``W4A16`` (group strategy, symmetric): ``scale = absmax(group) / 7.5``
    (an all-zero group: float32's epsilon), stored in the model's dtype, then
    ``q = round_even(clamp(w / scale, -8, 7))``; ``pack_to_int32`` stores ``q + 8`` eight to
    a word, element i of each eight in bits 4i..4i+3. ``weight_shape`` (int64 [R, C]) is the
    whole tensor's shape: the writer stores it once.
    """
    w = _f32(w)
    _need_2d(w, "ct_w4a16")
    groups = _groups(w, int(group), "ct_w4a16")
    amax = _absmax(groups)
    stored, divisor = _stored_scale(amax / _INT4_HALF_RANGE, scale_dtype)
    q = np.rint(np.clip(groups / divisor[..., None], INT4_MIN, INT4_MAX))
    nibbles = (q.astype(np.int32) + 8).astype(np.uint32).reshape(*w.shape[:-1], -1, 8)
    shifts = np.arange(0, 32, 4, dtype=np.uint32)
    words = np.bitwise_or.reduce(nibbles << shifts, axis=-1)
    return words.view(np.int32), stored


def dequantize_ct_w4a16(packed, scale, group: int = W4A16_GROUP) -> np.ndarray:
    words = np.asarray(packed, dtype=np.int32).view(np.uint32)
    shifts = np.arange(0, 32, 4, dtype=np.uint32)
    q = ((words[..., None] >> shifts) & 0xF).astype(np.int32) - 8
    q = q.reshape(*words.shape[:-1], -1).astype(np.float32)
    s = np.repeat(np.asarray(scale).astype(np.float32), group, axis=-1)
    return q * s


def nvfp4_global_scale(tensor_absmax: float) -> np.float32:
    """compressed-tensors ``generate_gparam``: ``448 * 6 / absmax`` in float32 (an all-zero
    tensor: 1.0). The value ``weight_global_scale`` stores; it divides the group scales."""
    amax = np.maximum(np.float32(tensor_absmax), _F32_TINY)
    with np.errstate(over="ignore"):  # torch: 2688.0 / t is reciprocal(t) * 2688
        g = (np.float32(1.0) / amax) * np.float32(FP8_E4M3_MAX * E2M1_MAX)
    return np.float32(g) if np.isfinite(g) else np.float32(1.0)


def ct_nvfp4(w, global_scale) -> tuple[np.ndarray, np.ndarray]:
    """Quantize ``w[..., R, C]`` to NVFP4 given the tensor's ``nvfp4_global_scale``:
    (``weight_packed`` uint8 [..., R, C/2], ``weight_scale`` E4M3 [..., R, C/16]).

    compressed-tensors ``NVFP4`` (tensor-group strategy, group 16): per group
    ``scale = e4m3(global * absmax / 6)`` (0 becomes 0.125), then
    ``code = e2m1(clamp(w / (scale / global), -6, 6))``, two codes a byte, low nibble first.
    """
    w = _f32(w)
    _need_2d(w, "ct_nvfp4")
    g = np.float32(global_scale)
    if not (np.isfinite(g) and g > 0):
        raise UsageError(f"ct_nvfp4: global scale must be finite and positive, got {g}")
    groups = _groups(w, NVFP4_GROUP, "ct_nvfp4")
    amax = _absmax(groups)
    scale = _round_e4m3(g * (amax / np.float32(E2M1_MAX)))
    scale = np.where(scale.astype(np.float32) == 0, _NVFP4_EPS, scale.astype(np.float32))
    scale_fp8 = scale.astype(ml_dtypes.float8_e4m3fn)
    divisor = (scale.astype(np.float32) / g).astype(np.float32)
    codes = _e2m1_codes(groups / divisor[..., None])
    packed = _pack_nibbles(codes.reshape(w.shape))
    return packed, scale_fp8


def dequantize_ct_nvfp4(packed, scale, global_scale) -> np.ndarray:
    values = E2M1_VALUES[_unpack_nibbles(packed)]
    s = np.asarray(scale).astype(np.float32) / np.float32(global_scale)
    s = np.repeat(s, NVFP4_GROUP, axis=-1)
    return values * s


# ---------------------------------------------------------------------------------------------
# validity of stored scales (inspect marks these)
# ---------------------------------------------------------------------------------------------


def invalid_scales(scale) -> int:
    """How many stored scales a serving kernel would choke on: for float and FP8 scales, NaN,
    infinite, zero or negative; for E8M0 bytes (uint8), 0xFF (NaN)."""
    s = np.asarray(scale)
    if s.dtype == np.uint8:
        return int(np.count_nonzero(s == E8M0_NAN))
    f = s.astype(np.float32)
    return int(np.count_nonzero(~(np.isfinite(f) & (f > 0))))
