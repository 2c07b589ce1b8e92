"""The jitted quantizers (quant/jitted.py) give kernels.py's bytes, the reference the other
tests hold to transformers and compressed-tensors: on draws, on adversarial values (ties,
zeros, saturation, tiny and huge groups, a short last band), and through the engine, where a
band is drawn and quantized in one XLA computation."""

from __future__ import annotations

import jax
import ml_dtypes
import numpy as np
import pytest

from weightgen.quant import jitted, kernels, scheme_of

FORMATS = {
    "fp8-block": (256, 384),
    "fp8-block-partial": (100, 200),  # a short last band, partial column blocks
    "mxfp4": (2, 64, 96),  # [experts, in, out]: transposed inside
    "ct-fp8": (128, 96),
    "ct-fp8-f16": (128, 96),
    "ct-fp8-f32": (128, 96),
    "ct-w4a16": (128, 256),
    "ct-w4a16-f16": (37, 256),
    "ct-nvfp4": (128, 64),
}


def _scheme(name: str):
    if name == "fp8-block-partial":
        return scheme_of({"format": "fp8-block", "block": [128, 128]})
    if name.endswith(("-f16", "-f32")):
        base, code = name.rsplit("-", 1)
        scale_dtype = {"f16": "float16", "f32": "float32"}[code]
        return scheme_of({"format": base, "scale_dtype": scale_dtype})
    return scheme_of(name)


def _global(scheme, band: np.ndarray):
    if not scheme.has_global:
        return None
    return scheme.global_scale(kernels.absmax(band))


def _same(scheme, band: np.ndarray, global_scale=None) -> None:
    """The jitted kernel's parts equal kernels.py's, dtype and bytes, and it says exact."""
    if global_scale is None:
        global_scale = _global(scheme, band)
    expected = scheme.quantize_band(band, global_scale)
    exact, got = jitted.quantize(scheme, band, global_scale)
    assert exact, "a band in range was sent to the reference path"
    assert got.keys() == expected.keys()
    for suffix, want in expected.items():
        assert got[suffix].dtype == want.dtype, suffix
        assert got[suffix].shape == want.shape, suffix
        if got[suffix].tobytes() != want.tobytes():
            a, b = got[suffix].view(np.uint8), want.view(np.uint8)
            bad = np.flatnonzero(a != b)
            raise AssertionError(f"{suffix!r}: {bad.size} bytes differ, first at {bad[:5]}")


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("std", [1e-3, 0.02, 1.0, 300.0])
def test_draws_give_the_reference_bytes(name, std):
    rng = np.random.default_rng(7)
    band = (rng.standard_normal(FORMATS[name]) * std).astype(np.float32)
    _same(_scheme(name), band)


def _grid(dtype) -> np.ndarray:
    """Every finite non-negative value of a small float format, as float32."""
    count = 256 if dtype == ml_dtypes.float8_e4m3fn else 16
    values = np.arange(count, dtype=np.uint8).view(dtype).astype(np.float32)
    return np.unique(values[np.isfinite(values) & (values >= 0)])


def _adversarial(largest: float, dtype, size: int) -> np.ndarray:
    """Ties (midpoints of the format's grid, where nearest-even decides), their float32
    neighbours, signed zeros, the saturation bound and past it, scaled so that ``largest``
    is a group's maximum."""
    grid = _grid(dtype)
    mid = ((grid[:-1] + grid[1:]) / 2).astype(np.float32)
    values = np.concatenate(
        [
            mid,
            np.nextafter(mid, np.float32(np.inf)),
            np.nextafter(mid, np.float32(-np.inf)),
            grid,
            [-0.0, 0.0, largest, np.nextafter(np.float32(largest), np.float32(np.inf))],
            [largest * 1.01, largest * 2, 1e-30, -1e-30],
        ]
    ).astype(np.float32)
    values = np.concatenate([values, -values])
    return np.resize(values, size)


@pytest.mark.parametrize("name", FORMATS)
def test_adversarial_values_give_the_reference_bytes(name):
    scheme = _scheme(name)
    shape = FORMATS[name]
    rng = np.random.default_rng(3)
    e2m1 = scheme.format.kernel in ("mxfp4", "ct_nvfp4")
    dtype = ml_dtypes.float4_e2m1fn if e2m1 else ml_dtypes.float8_e4m3fn
    largest = kernels.E2M1_MAX if e2m1 else kernels.FP8_E4M3_MAX
    band = _adversarial(largest, dtype, int(np.prod(shape))).reshape(shape)
    band = band * rng.choice(np.float32([1.0, 0.5, 2.0**-20, 2.0**20]), shape)
    band = band.astype(np.float32)
    flat = band.reshape(-1)
    flat[:512] = 0.0  # whole zero blocks and groups (the reference's fallback scale)
    flat[600:700] = rng.permutation(flat[600:700])
    _same(scheme, band)
    # Groups whose maximum is exactly a format value times a power of two: every ratio a tie.
    for power in (-40, -3, 0, 7, 40):
        tied = np.resize(_grid(dtype), band.size).reshape(shape).astype(np.float32)
        tied = tied * rng.choice(np.float32([1, -1]), shape) * np.float32(2.0**power)
        _same(scheme, tied.astype(np.float32))


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("magnitude", [1e-39, 1e-30, 1e30, 3e38, np.inf])
def test_groups_near_the_float32_edges_take_the_reference_path(name, magnitude):
    """XLA's CPU backend flushes subnormals: a band with a group whose maximum is that far
    from 1 (or not finite) says so (not exact), whatever its other groups hold."""
    scheme = _scheme(name)
    shape = FORMATS[name]
    band = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    finite = min(magnitude, 3e38)
    edge = (band / np.abs(band).max() * np.float32(finite)).astype(np.float32)
    edge.reshape(-1)[0] = np.float32(magnitude)
    exact, _ = jitted.quantize(scheme, edge, _global(scheme, np.nan_to_num(edge)))
    assert not exact
    # One such group among ordinary ones: a block row, an expert, the first rows.
    rows = {"mxfp4": 1, "fp8_block": 128}.get(scheme.format.kernel, 16)
    mixed = band.copy()
    mixed[:rows] = edge[:rows]
    exact, _ = jitted.quantize(scheme, mixed, _global(scheme, np.nan_to_num(mixed)))
    assert not exact


def test_in_range_extremes_are_exact():
    """Bands near the edges of the safe range, [2**-64, 2**64] for each group's maximum."""
    for name in ("fp8-block", "ct-fp8", "ct-fp8-f16", "ct-w4a16", "mxfp4", "ct-nvfp4"):
        scheme = _scheme(name)
        shape = FORMATS[name]
        for power in (-56, 63):
            band = np.random.default_rng(power & 0xFF).standard_normal(shape).astype(np.float32)
            band = band / np.abs(band).max() * np.float32(2.0**power)
            band.reshape(-1)[0] = np.float32(2.0**power)
            _same(scheme, band.astype(np.float32))


def test_global_scale_edges_take_the_reference_path():
    scheme = _scheme("ct-nvfp4")
    band = np.random.default_rng(1).standard_normal(FORMATS["ct-nvfp4"]).astype(np.float32)
    for inside in (2688.0, 2.0**-100, 2.0**100):
        _same(scheme, band, np.float32(inside))
    assert not jitted.quantize(scheme, band, np.float32(1e-31))[0]
    assert not jitted.quantize(scheme, band, np.float32(1e31))[0]


def test_absmax_is_exact_on_subnormals_and_signs():
    values = np.array([1e-41, -3e-41, 0.0, -0.0], np.float32)
    got = float(jax.jit(jitted.absmax)(values))
    assert got == kernels.absmax(values) == np.float32(3e-41)
    values = np.array([-2.5, 2.0, 1.0], np.float32)
    assert float(jax.jit(jitted.absmax)(values)) == 2.5


# --------------------------------------------------------------------------------------------
# through the engine: a band drawn and quantized in one jitted call
# --------------------------------------------------------------------------------------------

# (format, logical shape): rows not a multiple of the 128-row band (a short last band),
# columns not of the 128-column block.
ENGINE_FORMATS = [
    ({"format": "fp8-block", "block": [128, 128]}, [300, 200]),
    ({"format": "fp8-block", "block": [32, 16]}, [70, 48]),
    ({"format": "mxfp4"}, [3, 64, 40]),
    ({"format": "ct-fp8", "scale_dtype": "bfloat16"}, [130, 40]),
    ({"format": "ct-w4a16", "scale_dtype": "float16"}, [140, 256]),
    ({"format": "ct-nvfp4"}, [150, 48]),
]
RULES = [
    {"init": "normal", "stddev": 0.02},
    {"init": "truncated-normal", "stddev": 0.7},
    {"init": "uniform", "scale": 3.0},
    {"init": "glorot-uniform"},
    {"init": "he-normal"},
]


def _spec(scheme: dict, shape: list[int], rules: list[dict]) -> dict:
    name = scheme["format"]
    return {
        "seed": 11,
        "quantize": scheme,
        "tensors": {
            f"w{i}.weight": {**rule, "shape": shape, "quantize": name}
            for i, rule in enumerate(rules)
        },
    }


def _expected(spec: dict, scheme) -> dict[str, np.ndarray]:
    """Each stored part from kernels.py applied to jax.nn.initializers' whole draw."""
    from conftest import reference

    from weightgen.specfile import parse_spec

    out = {}
    logicals = {t.quant.logical.name: t.quant.logical for t in parse_spec(spec).plan.tensors}
    for name, logical in logicals.items():
        drawn = np.asarray(reference(logical), np.float32)
        g = _global(scheme, drawn)
        for suffix, data in scheme.quantize_band(drawn, g).items():
            out[name + suffix] = data
        if g is not None:
            out[name + "_global_scale"] = np.array([g], np.float32)
    return out


def _write(tmp_path, spec: dict, label: str, **options) -> dict[str, np.ndarray]:
    import json

    import weightgen

    path = tmp_path / f"{label}.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / f"{label}.safetensors"
    weightgen.run_spec(str(path), out, **options)
    return weightgen.load(out)


@pytest.mark.parametrize(("scheme", "shape"), ENGINE_FORMATS, ids=lambda v: str(v))
def test_fused_bands_equal_the_reference_on_any_device_count(tmp_path, monkeypatch, scheme, shape):
    """Through the engine, every band on the fused kernel (the reference path is never
    taken), on one device and round robin over four, the bytes of kernels.py applied to
    jax.nn.initializers' draw of the whole tensor."""
    from weightgen.engine import Engine

    def refuse(*args, **kwargs):
        raise AssertionError("a draw band went the reference way")

    monkeypatch.setattr(Engine, "_drawn_band", refuse)
    spec = _spec(scheme, shape, RULES)
    expected = _expected(spec, scheme_of(scheme))
    one = _write(tmp_path, spec, "one", devices="cpu:0")
    four = _write(tmp_path, spec, "four", devices="cpu:0,1,2,3", chunk_size=1000)
    for name, want in expected.items():
        for written in (one, four):
            got = written[name]
            assert got.tobytes() == np.ascontiguousarray(want).tobytes(), name


def test_a_band_near_the_float32_edges_is_drawn_again_the_reference_way(tmp_path, monkeypatch):
    """A constant 1e-30 weight (every group's maximum far below 2**-64): the fused kernel
    says its bytes may differ, and the band is redrawn chunk by chunk and quantized by
    kernels.py."""
    from weightgen.engine import Engine

    calls = []
    original = Engine._reference_band

    def spy(self, part, start, stop):
        calls.append((part.logical.name, start, stop))
        return original(self, part, start, stop)

    monkeypatch.setattr(Engine, "_reference_band", spy)
    for number, (scheme, shape) in enumerate(ENGINE_FORMATS):
        calls.clear()
        rules = [{"init": "constant", "value": 1e-30}, {"init": "normal", "stddev": 0.02}]
        spec = _spec(scheme, shape, rules)
        written = _write(tmp_path, spec, f"edge{number}")
        for name, want in _expected(spec, scheme_of(scheme)).items():
            assert written[name].tobytes() == np.ascontiguousarray(want).tobytes(), name
        assert calls and {c[0] for c in calls} == {"w0.weight"}, (scheme, calls)
