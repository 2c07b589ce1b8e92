"""The quantizer kernels give the bytes of each format's own reference quantizer.

Oracles, run on CPU here (imported lazily: torch, transformers and compressed-tensors cost
seconds, and collection of the other test files should not pay for them):
- fp8-block: transformers 5.24.0 ``Fp8Quantize._quantize_one`` and ``Fp8Dequantize``.
- ct-fp8, ct-w4a16, ct-nvfp4: compressed-tensors' ``calculate_qparams`` / ``generate_gparam``
  (the scales llm-compressor's observers compute) and its compressors' ``compress`` /
  ``decompress`` (the bytes and the values).
- mxfp4: transformers' ``quantize_to_mxfp4`` runs triton_kernels' ``downcast_to_mxfp_torch``,
  which imports triton and is fetched from the Hub at run time, so neither runs here. The test
  holds the kernel to that function's definition (read in triton-lang/triton,
  python/triton_kernels/triton_kernels/numerics_details/mxfp.py: bfloat16 input, scale
  2**ceil(log2(absmax / 6)), E2M1 nearest even, low nibble first), computed independently in
  float64 by search over the sixteen codes, and dequantizes with transformers' own
  ``convert_moe_packed_tensors``.
"""

from __future__ import annotations

import math
import types

import ml_dtypes
import numpy as np
import pytest

from weightgen.errors import UsageError
from weightgen.quant import kernels as K

STDS = [1e-3, 0.02, 1.0, 300.0]


def _draw(shape, std, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * std).astype(np.float32)


def _bytes(a) -> bytes:
    """The raw bytes of a numpy array or a torch tensor (any dtype, float8 included)."""
    if not isinstance(a, np.ndarray):
        import torch

        a = a.contiguous().reshape(-1).view(torch.uint8).numpy()
    return np.ascontiguousarray(a).tobytes()


def _assert_same(ours, theirs, what: str) -> None:
    assert tuple(ours.shape) == tuple(theirs.shape), (what, ours.shape, theirs.shape)
    assert _bytes(ours) == _bytes(theirs), f"{what}: bytes differ"


# --------------------------------------------------------------------------------------------
# the casts: ml_dtypes' saturating nearest-even cast, through a table
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cast, dtype, largest",
    [
        (lambda v: K._round_e4m3(v).view(np.uint8), ml_dtypes.float8_e4m3fn, 448.0),
        (lambda v: K._e2m1_codes(v), ml_dtypes.float4_e2m1fn, 6.0),
    ],
    ids=["e4m3", "e2m1"],
)
def test_table_casts_equal_ml_dtypes(cast, dtype, largest):
    # (Checked once for all 2**32 float32 inputs; here: any bits, every exponent near the
    # format's range with random mantissas, and every midpoint of the format and its
    # neighbours, where a sticky bit decides.)
    rng = np.random.default_rng(12)
    anywhere = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    exponent = rng.integers(127 - 16, 127 + 12, 400_000).astype(np.uint32)
    low_bits = rng.integers(0, 2**23, 400_000).astype(np.uint32) & rng.choice(
        np.array([0x7FFFFF, 0x7F8000, 0x7FFFFF ^ 0x7FFF, 0x1], np.uint32), 400_000
    )
    near = (exponent << 23) | low_bits | (rng.integers(0, 2, 400_000).astype(np.uint32) << 31)
    grid = np.arange(256 if dtype == ml_dtypes.float8_e4m3fn else 16, dtype=np.uint8)
    grid = np.unique(grid.view(dtype).astype(np.float32))
    grid = grid[np.isfinite(grid)]
    mid = ((grid[:-1] + grid[1:]) / 2).astype(np.float32)
    ties = np.concatenate([mid, np.nextafter(mid, np.inf), np.nextafter(mid, -np.inf), grid])
    v = np.concatenate([anywhere.view(np.float32), near.view(np.float32), ties, -ties])
    v = v[np.isfinite(v)]
    expected = np.clip(v, -largest, largest).astype(dtype).view(np.uint8)
    assert np.array_equal(cast(v), expected)


# --------------------------------------------------------------------------------------------
# fp8-block against transformers 5.24.0
# --------------------------------------------------------------------------------------------


def _hf_fp8(w: np.ndarray, block):
    """transformers' own FP8 quantizer (integrations/finegrained_fp8.py, Fp8Quantize)."""
    import torch
    from transformers import FineGrainedFP8Config
    from transformers.integrations.finegrained_fp8 import Fp8Quantize

    config = FineGrainedFP8Config(weight_block_size=list(block))
    op = Fp8Quantize(types.SimpleNamespace(quantization_config=config))
    out = op._quantize_one("m.weight", torch.from_numpy(w.copy()))
    assert "m.weight_scale_inv" in out, "transformers left the weight unquantized"
    return out["m.weight"], out["m.weight_scale_inv"]


@pytest.mark.parametrize("std", STDS)
@pytest.mark.parametrize(
    "shape, block",
    [
        ((256, 384), (128, 128)),
        ((128, 128), (128, 128)),
        ((3, 256, 128), (128, 128)),
        ((96, 64), (32, 16)),
    ],
)
def test_fp8_block_matches_transformers(shape, block, std):
    w = _draw(shape, std)
    w[..., : block[0], : block[1]] = 0.0  # an all-zero block: scale 1, zeros
    q, scale_inv = K.fp8_block(w, block)
    ref_q, ref_scale = _hf_fp8(w, block)
    _assert_same(q, ref_q, "weight")
    _assert_same(scale_inv, ref_scale, "weight_scale_inv")


def test_fp8_block_ties_round_to_nearest_even():
    # absmax 448 makes the scale exactly 1: every midpoint between two E4M3 values is a tie.
    grid = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    grid = np.unique(grid[np.isfinite(grid) & (grid >= 0)])
    midpoints = (grid[:-1] + grid[1:]) / 2
    w = np.zeros((128, 128), np.float32)
    w.flat[: midpoints.size] = midpoints
    w.flat[midpoints.size : 2 * midpoints.size] = -midpoints
    w[-1, -1] = 448.0
    q, scale_inv = K.fp8_block(w)
    ref_q, ref_scale = _hf_fp8(w, (128, 128))
    _assert_same(q, ref_q, "weight")
    _assert_same(scale_inv, ref_scale, "weight_scale_inv")
    codes = q.view(np.uint8).ravel()[: midpoints.size]
    assert np.all(codes % 2 == 0), "a tie went to an odd code"


def test_fp8_block_partial_edge_blocks_take_their_own_rows():
    # DeepSeek-V3's kv_a_proj_with_mqa is [576, 7168]: 4.5 blocks of rows, scales [5, 56].
    # transformers' quantizer leaves such a weight alone, so each partial block is checked
    # against transformers quantizing that block by itself (block = its own shape).
    w = _draw((576, 320), 0.02, seed=1)
    q, scale_inv = K.fp8_block(w, (128, 128))
    assert q.shape == (576, 320) and scale_inv.shape == (5, 3)
    for i in range(5):
        for j in range(3):
            rows, cols = slice(128 * i, 128 * (i + 1)), slice(128 * j, 128 * (j + 1))
            tile = np.ascontiguousarray(w[rows, cols])
            ref_q, ref_scale = _hf_fp8(tile, tile.shape)
            _assert_same(q[rows, cols], ref_q, f"block {i},{j}")
            _assert_same(scale_inv[i : i + 1, j : j + 1], ref_scale, f"scale {i},{j}")


@pytest.mark.parametrize("shape", [(576, 320), (512, 256), (100, 130)])
def test_fp8_block_bands_give_the_whole_tensor(shape):
    w = _draw(shape, 0.02, seed=2)
    q, scale_inv = K.fp8_block(w)
    parts = [K.fp8_block(w[r : r + 256]) for r in range(0, shape[0], 256)]
    assert np.concatenate([p[0] for p in parts]).tobytes() == q.tobytes()
    assert np.concatenate([p[1] for p in parts]).tobytes() == scale_inv.tobytes()


def test_fp8_block_dequantizes_as_transformers_does():
    import torch
    from transformers.integrations.finegrained_fp8 import Fp8Dequantize

    w = _draw((256, 384), 0.02, seed=3)
    q, scale_inv = K.fp8_block(w)
    op = Fp8Dequantize(types.SimpleNamespace(quantization_config=None))
    ref = op._dequantize_one(
        torch.from_numpy(q.view(np.uint8).copy()).view(torch.float8_e4m3fn),
        torch.from_numpy(scale_inv),
        output_dtype=torch.float32,
    )
    ours = K.dequantize_fp8_block(q, scale_inv)
    _assert_same(ours, ref, "dequantized")
    # Within E4M3's half step (2**-4 relative) of every value, the rule's draw.
    assert np.all(np.abs(ours - w) <= np.abs(w) * 2**-4 + 2**-9 * scale_inv.max())


# --------------------------------------------------------------------------------------------
# mxfp4 against triton_kernels' definition and transformers' dequantization
# --------------------------------------------------------------------------------------------


def _e2m1_nearest_even(v: np.ndarray) -> np.ndarray:
    """E2M1 codes by search: nearest of the eight magnitudes in float64, ties to the even
    code (an even mantissa), saturating at 6; a negative value keeps its sign bit even when
    it rounds to zero (as downcast_to_mxfp_torch's bit arithmetic does)."""
    mags = K.E2M1_VALUES[:8].astype(np.float64)
    a = np.minimum(np.abs(v.astype(np.float64)), 6.0)[..., None]
    dist = np.abs(a - mags)
    best = dist.min(axis=-1, keepdims=True)
    candidates = np.where(dist == best, np.arange(8), 99)
    even = np.where(candidates % 2 == 0, candidates, 99).min(axis=-1)
    code = np.where(even < 99, even, candidates.min(axis=-1))
    return (code | np.where(np.signbit(v), 8, 0)).astype(np.uint8)


def _mxfp4_by_definition(w: np.ndarray):
    x = w.astype(ml_dtypes.bfloat16).astype(np.float32)
    groups = x.reshape(*x.shape[:-1], -1, 32)
    amax = np.abs(groups).max(axis=-1)
    ratio = amax / np.float32(6.0)  # float32, as the reference divides
    scales = np.zeros(ratio.shape, np.uint8)
    codes = np.zeros(groups.shape, np.uint8)
    for idx in np.ndindex(ratio.shape):
        r = float(ratio[idx])
        if r == 0.0:
            codes[idx] = _e2m1_nearest_even(groups[idx] * 0.0)
            continue
        mant, exp = math.frexp(r)  # r = mant * 2**exp, 0.5 <= mant < 1
        e = exp - 1 if mant == 0.5 else exp  # ceil(log2(r))
        e = max(e, -126)  # a subnormal ratio rounds up to the smallest normal
        scales[idx] = 127 + e
        codes[idx] = _e2m1_nearest_even(groups[idx].astype(np.float64) * 2.0**-e)
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return packed, scales


@pytest.mark.parametrize("std", STDS)
@pytest.mark.parametrize("shape", [(64, 128), (2, 24, 96)])
def test_mxfp4_follows_the_reference_definition(shape, std):
    w = _draw(shape, std, seed=4)
    w[..., 0, :32] = 0.0  # an all-zero group: byte 0, codes 0
    blocks, scales = K.mxfp4(w)
    assert blocks.shape == (*shape[:-1], shape[-1] // 32, 16) and blocks.dtype == np.uint8
    assert scales.shape == (*shape[:-1], shape[-1] // 32) and scales.dtype == np.uint8
    ref_blocks, ref_scales = _mxfp4_by_definition(w)
    _assert_same(scales, ref_scales, "_scales")
    _assert_same(blocks, ref_blocks.reshape(blocks.shape), "_blocks")


def test_mxfp4_ties_round_to_nearest_even():
    ties = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], np.float32)
    w = np.zeros((1, 32), np.float32)
    w[0, : ties.size] = ties
    w[0, ties.size : 2 * ties.size] = -ties
    w[0, -1] = 6.0  # absmax 6: the scale is exactly 1 (byte 127)
    blocks, scales = K.mxfp4(w)
    assert scales.tolist() == [[127]]
    ref_blocks, _ = _mxfp4_by_definition(w)
    _assert_same(blocks, ref_blocks.reshape(blocks.shape), "_blocks")


def test_mxfp4_dequantizes_as_transformers_does():
    import torch
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    # gpt-oss: gate_up_proj [E, H, 2I] is stored as blocks [E, 2I, H/32, 16].
    experts, hidden, inter2 = 2, 64, 48
    w = _draw((experts, hidden, inter2), 0.02, seed=5)
    blocks, scales = K.mxfp4(np.ascontiguousarray(w.transpose(0, 2, 1)))
    assert blocks.shape == (experts, inter2, hidden // 32, 16)
    ref = convert_moe_packed_tensors(
        torch.from_numpy(blocks), torch.from_numpy(scales), dtype=torch.float32
    )
    ours = K.dequantize_mxfp4(blocks, scales).transpose(0, 2, 1)
    _assert_same(np.ascontiguousarray(ours), ref, "dequantized")
    # ROUND_UP scales never clip: every value is within half an E2M1 step (1/4 of the scale).
    step = np.ldexp(np.float32(1), scales.astype(np.int32) - 127).repeat(32, axis=-1)
    assert np.all(np.abs(ours - w) <= step.transpose(0, 2, 1) + np.abs(w) * 2**-8)


def test_mxfp4_bands_give_the_whole_tensor():
    w = _draw((100, 64), 0.02, seed=6)
    blocks, scales = K.mxfp4(w)
    parts = [K.mxfp4(w[r : r + 32]) for r in range(0, 100, 32)]
    assert np.concatenate([p[0] for p in parts]).tobytes() == blocks.tobytes()
    assert np.concatenate([p[1] for p in parts]).tobytes() == scales.tobytes()


# --------------------------------------------------------------------------------------------
# compressed-tensors: the scales of calculate_qparams / generate_gparam, the compressors' bytes
# --------------------------------------------------------------------------------------------

_TORCH_SCALE = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _scheme(preset: str):
    from compressed_tensors.quantization import preset_name_to_scheme

    return preset_name_to_scheme(preset, ["Linear"])


def _compressor(fmt: str):
    from compressed_tensors.compressors import BaseCompressor

    return BaseCompressor.get_value_from_registry(fmt)


def _ct_reference(w: np.ndarray, preset: str, fmt: str, scale_dtype: str):
    """llm-compressor's path on one Linear: the observer's min/max per channel or group,
    calculate_qparams, the scale kept in a parameter of the model's dtype, then compress."""
    import torch
    from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam

    scheme = _scheme(preset)
    args = scheme.weights
    weight = torch.from_numpy(w.copy())
    if args.strategy == "channel":
        view = weight
        reduce = {"dim": -1, "keepdim": True}
    else:
        view = weight.unflatten(-1, (-1, args.group_size))
        reduce = {"dim": -1}
    state = {"weight": weight}
    global_scale = None
    if args.strategy == "tensor_group":
        global_scale = generate_gparam(weight.amin(), weight.amax())
        state["weight_global_scale"] = global_scale
    scale, _ = calculate_qparams(
        view.amin(**reduce), view.amax(**reduce), args, global_scale=global_scale
    )
    state["weight_scale"] = scale.to(getattr(torch, _TORCH_SCALE[scale_dtype]))
    return _compressor(fmt).compress(state, scheme), scheme


def _sprinkle_zeros(w: np.ndarray, group: int) -> np.ndarray:
    w = w.copy()
    w[0] = 0.0  # an all-zero row (channel) and so all-zero groups
    w[1, :group] = 0.0
    return w


@pytest.mark.parametrize("scale_dtype", ["bfloat16", "float32", "float16"])
@pytest.mark.parametrize("std", STDS)
def test_ct_fp8_matches_compressed_tensors(std, scale_dtype):
    w = _sprinkle_zeros(_draw((96, 256), std, seed=7), 256)
    q, scale = K.ct_fp8(w, scale_dtype=scale_dtype)
    ref, _ = _ct_reference(w, "FP8_DYNAMIC", "float-quantized", scale_dtype)
    assert set(ref) == {"weight", "weight_scale"}
    _assert_same(q, ref["weight"], "weight")
    _assert_same(scale, ref["weight_scale"], "weight_scale")


@pytest.mark.parametrize("scale_dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("std", STDS)
def test_ct_w4a16_matches_compressed_tensors(std, scale_dtype):
    w = _sprinkle_zeros(_draw((48, 384), std, seed=8), 128)
    packed, scale = K.ct_w4a16(w, scale_dtype=scale_dtype)
    ref, _ = _ct_reference(w, "W4A16", "pack-quantized", scale_dtype)
    assert set(ref) == {"weight_packed", "weight_scale", "weight_shape"}
    _assert_same(packed, ref["weight_packed"], "weight_packed")
    _assert_same(scale, ref["weight_scale"], "weight_scale")
    assert ref["weight_shape"].tolist() == list(w.shape)


@pytest.mark.parametrize("std", STDS)
def test_ct_nvfp4_matches_compressed_tensors(std):
    w = _sprinkle_zeros(_draw((64, 256), std, seed=9), 16)
    global_scale = K.nvfp4_global_scale(K.absmax(w))
    packed, scale = K.ct_nvfp4(w, global_scale)
    ref, _ = _ct_reference(w, "NVFP4", "nvfp4-pack-quantized", "float32")
    assert set(ref) == {"weight_packed", "weight_scale", "weight_global_scale"}
    _assert_same(np.array([global_scale], np.float32), ref["weight_global_scale"], "global")
    _assert_same(packed, ref["weight_packed"], "weight_packed")
    _assert_same(scale, ref["weight_scale"], "weight_scale")


@pytest.mark.parametrize(
    "preset, fmt",
    [
        ("FP8_DYNAMIC", "float-quantized"),
        ("W4A16", "pack-quantized"),
        ("NVFP4", "nvfp4-pack-quantized"),
    ],
)
def test_ct_dequantizes_as_compressed_tensors_does(preset, fmt):
    import torch

    w = _draw((32, 256), 0.02, seed=10)
    if preset == "FP8_DYNAMIC":
        q, scale = K.ct_fp8(w, scale_dtype="float32")
        state = {"weight": q, "weight_scale": scale}
        ours = K.dequantize_ct_fp8(q, scale)
    elif preset == "W4A16":
        packed, scale = K.ct_w4a16(w, scale_dtype="float32")
        state = {
            "weight_packed": packed,
            "weight_scale": scale,
            "weight_shape": np.array(w.shape, np.int64),
        }
        ours = K.dequantize_ct_w4a16(packed, scale)
    else:
        g = K.nvfp4_global_scale(K.absmax(w))
        packed, scale = K.ct_nvfp4(w, g)
        state = {
            "weight_packed": packed,
            "weight_scale": scale,
            "weight_global_scale": np.array([g], np.float32),
        }
        ours = K.dequantize_ct_nvfp4(packed, scale, g)

    def to_torch(a):
        if a.dtype == ml_dtypes.float8_e4m3fn:
            return torch.from_numpy(a.view(np.uint8).copy()).view(torch.float8_e4m3fn)
        return torch.from_numpy(a.copy())

    out = _compressor(fmt).decompress({k: to_torch(v) for k, v in state.items()}, _scheme(preset))
    ref = out["weight"]
    if ref.dtype == torch.bfloat16:  # the NVFP4 compressor unpacks to bfloat16
        ours = ours.astype(ml_dtypes.bfloat16)
    _assert_same(ours, ref, "dequantized")


def test_nvfp4_two_passes_over_bands_give_the_whole_tensor():
    w = _draw((80, 64), 0.02, seed=11)
    bands = [w[r : r + 16] for r in range(0, 80, 16)]
    global_scale = K.nvfp4_global_scale(max(K.absmax(b) for b in bands))  # the first pass
    assert global_scale == K.nvfp4_global_scale(K.absmax(w))
    whole = K.ct_nvfp4(w, global_scale)
    parts = [K.ct_nvfp4(b, global_scale) for b in bands]  # the second pass
    for i in range(2):
        assert np.concatenate([p[i] for p in parts]).tobytes() == whole[i].tobytes()


# --------------------------------------------------------------------------------------------
# every scale valid; bad input refused
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fill", [0.0, 1e-38, 1e-30, 3e38])
def test_every_scale_is_valid_even_at_the_extremes(fill):
    w = np.full((128, 256), fill, np.float32)
    w[::2] *= -1
    checks = {
        "fp8_block": K.fp8_block(w)[1],
        "mxfp4": K.mxfp4(w)[1],
        "ct_fp8": K.ct_fp8(w)[1],
        "ct_w4a16": K.ct_w4a16(w)[1],
        "ct_fp8 float16": K.ct_fp8(w, scale_dtype="float16")[1],
        "ct_w4a16 float16": K.ct_w4a16(w, scale_dtype="float16")[1],
        "ct_nvfp4": K.ct_nvfp4(w, K.nvfp4_global_scale(K.absmax(w)))[1],
    }
    for name, scale in checks.items():
        assert K.invalid_scales(scale) == 0, (name, fill, scale.ravel()[:4])
    assert np.all(np.isfinite(K.dequantize_fp8_block(*K.fp8_block(w))))
    assert np.all(np.isfinite(K.dequantize_ct_fp8(*K.ct_fp8(w, scale_dtype="float16"))))


def test_invalid_scales_counts_what_kernels_choke_on():
    assert K.invalid_scales(np.array([0xFF, 0, 127, 0xFF], np.uint8)) == 2
    fp8 = np.array([0x7F, 0xFF, 0x00, 0x38], np.uint8).view(ml_dtypes.float8_e4m3fn)
    assert K.invalid_scales(fp8) == 3  # NaN, NaN, zero
    f32 = np.array([1.0, 0.0, -1.0, np.inf, np.nan, 1e-40], np.float32)
    assert K.invalid_scales(f32) == 4


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: K.mxfp4(np.zeros((4, 48), np.float32)), "multiple of 32"),
        (lambda: K.ct_w4a16(np.zeros((4, 96), np.float32)), "multiple of 128"),
        (lambda: K.ct_nvfp4(np.zeros((4, 24), np.float32), 1.0), "multiple of 16"),
        (lambda: K.fp8_block(np.zeros((4, 8), np.float64)), "float32"),
        (lambda: K.fp8_block(np.zeros(8, np.float32)), "matrix"),
        (lambda: K.ct_fp8(np.zeros((4, 8), np.float32), scale_dtype="int8"), "scale dtype"),
        (lambda: K.ct_nvfp4(np.zeros((4, 16), np.float32), 0.0), "global scale"),
    ],
)
def test_bad_input_is_refused_with_a_usage_error(call, message):
    with pytest.raises(UsageError, match=message):
        call()
