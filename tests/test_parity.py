"""The parity contract: weightgen's bytes equal jax.nn.initializers' for every initializer,
parameter set, dtype, awkward shape and seed; chunking and device count change nothing."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import generated, reference, same_bytes
from hypothesis import given, settings
from hypothesis import strategies as st

from weightgen.initializers import REGISTRY
from weightgen.plan import make_tensor

REAL = ["float32", "float16", "bfloat16", "float64"]
COMPLEX = ["complex64", "complex128"]
FLOAT8 = ["float8_e4m3fn", "float8_e5m2"]

# Shapes that stress the chunking: primes, a single row, a 5-D kernel, a size that is not a
# multiple of any chunk size used below.
FAN_SHAPES = [(7, 11), (1, 13), (3, 3, 5, 7, 2), (257, 5)]
FLAT_SHAPES = [*FAN_SHAPES, (), (1,), (0, 5)]
SHAPES = {
    "orthogonal": [(7, 11), (11, 7), (3, 4, 5), (1, 9)],
    "delta_orthogonal": [(3, 5, 7), (3, 3, 4, 4), (1, 2, 2, 3, 5)],
    "variance_scaling": FAN_SHAPES,
}

# Parameter sets per initializer: JAX's defaults, then non-default values.
VARIANTS = {
    "constant": [{"value": 0.1}, {"value": -7.0}],
    "uniform": [{}, {"scale": 3.0}],
    "normal": [{}, {"stddev": 0.5}],
    "truncated-normal": [{}, {"stddev": 1.5, "lower": -1.0, "upper": 3.0}],
    "variance-scaling": [
        {"scale": s, "mode": m, "distribution": d}
        for (s, m), d in zip(
            itertools.product((0.5, 2.0), ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")),
            itertools.cycle(("truncated_normal", "normal", "uniform")),
        )
    ],
    "he-normal": [{}, {"in_axis": (0, 1), "out_axis": -1}],
    "glorot-uniform": [{}, {"in_axis": 0, "out_axis": 1}],
    "orthogonal": [{}, {"scale": 2.0, "column_axis": 0}],
    "delta-orthogonal": [{}, {"scale": 0.5, "column_axis": -2}],
}
SEEDS = [0, 1, 42, 2**32 - 1]


def _dtypes(entry):
    dtypes = list(REAL) + list(FLOAT8)
    if entry.complex_ok:
        dtypes += COMPLEX
    if entry.family == "constant" or not entry.elementwise:
        dtypes = [d for d in dtypes if d not in FLOAT8] + ["float8_e4m3fn"]
    return dtypes


def _cases():
    counter = itertools.count()
    for entry in REGISTRY.values():
        shapes = SHAPES.get(entry.family, FLAT_SHAPES)
        variants = VARIANTS.get(entry.name, [{}])
        for dtype in _dtypes(entry):
            for i, shape in enumerate(shapes):
                n = next(counter)
                params = variants[(i + len(dtype)) % len(variants)]
                if params.get("in_axis") == (0, 1) and len(shape) < 3:
                    params = {}
                if entry.family == "variance_scaling" and entry.name == "variance-scaling":
                    params = variants[n % len(variants)]
                yield pytest.param(
                    entry.name,
                    params,
                    shape,
                    dtype,
                    SEEDS[n % len(SEEDS)],
                    id=f"{entry.name}-{dtype}-{'x'.join(map(str, shape)) or 'scalar'}",
                )


@pytest.mark.parametrize(("init", "params", "shape", "dtype", "seed"), list(_cases()))
def test_matches_jax(init, params, shape, dtype, seed):
    spec = make_tensor(init, shape, params=params, dtype=dtype, seed=seed)
    # A small, odd chunk size: many chunks, and a tail in most shapes.
    assert same_bytes(generated(spec, chunk_elems=97), reference(spec))


@pytest.mark.parametrize("init", ["normal", "he-uniform", "truncated-normal", "orthogonal"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float8_e5m2"])
def test_sample_dtype_float32_rounds_jax_float32(init, dtype):
    """--sample-dtype float32: init(key, shape, float32).astype(dtype)."""
    spec = make_tensor(init, (33, 17), dtype=dtype, sample_dtype="float32", seed=3)
    assert spec.sample_dtype.name == "float32"
    assert same_bytes(generated(spec, chunk_elems=64), reference(spec))


@pytest.mark.parametrize("dtype", FLOAT8)
@pytest.mark.parametrize("init", ["normal", "he-normal"])
def test_float8_drawn_in_float8_on_request(init, dtype):
    """Parity with JAX's own float8 draws stays available with --sample-dtype."""
    spec = make_tensor(init, (9, 31), dtype=dtype, sample_dtype=dtype, seed=5)
    assert same_bytes(generated(spec, chunk_elems=50), reference(spec))


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 1000, 4096, 2**20])
@pytest.mark.parametrize(
    ("init", "dtype"),
    [
        ("he-normal", "float32"),
        ("normal", "bfloat16"),
        ("glorot-uniform", "complex64"),
        ("orthogonal", "float32"),
    ],
)
def test_chunk_size_never_changes_bytes(init, dtype, chunk):
    spec = make_tensor(init, (61, 67), dtype=dtype, seed=11)
    assert same_bytes(generated(spec, chunk_elems=chunk), reference(spec))


@pytest.mark.parametrize("init", ["he-normal", "uniform", "orthogonal", "delta-orthogonal"])
def test_device_count_never_changes_bytes(init):
    devices = jax.devices()
    assert len(devices) == 4, "conftest forces 4 CPU devices"
    shape = (3, 3, 31, 37) if init == "delta-orthogonal" else (131, 37)
    spec = make_tensor(init, shape, seed=9)
    one = generated(spec, chunk_elems=1000, devices=devices[:1])
    four = generated(spec, chunk_elems=1000, devices=devices)
    assert same_bytes(one, four)
    assert same_bytes(four, reference(spec))


def test_float32_unchanged_when_a_plan_needs_x64():
    """A spec that mixes float64 and float32 runs with x64 on; float32 bytes must not move."""
    spec = make_tensor("he-normal", (45, 23), seed=4)
    expected = reference(spec)  # x64 off, as the contract states for float32
    from conftest import x64

    with x64(True):
        from weightgen.engine import Engine

        got = np.concatenate(list(Engine(None, 100).chunks(spec))).reshape(spec.shape)
    assert same_bytes(got, expected)


def test_counter_carry_past_2_32():
    """Flat indices above 2**32 carry into the high counter word, as JAX's 64-bit iota."""
    from jax.extend.random import threefry2x32_p

    from weightgen import prng

    words = prng.key_words(jax.random.key(123))
    start = 2**32 - 3
    got = np.asarray(jax.random.bits(prng.wrap(prng.offset_key_data(words, start)), (6,)))
    index = np.arange(start, start + 6, dtype=np.uint64)
    hi = (index >> np.uint64(32)).astype(np.uint32)
    lo = (index & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    b1, b2 = threefry2x32_p.bind(np.uint32(words[0]), np.uint32(words[1]), hi, lo)
    assert np.array_equal(got, np.asarray(b1) ^ np.asarray(b2))
    assert hi.tolist() == [0, 0, 0, 1, 1, 1]  # the range really crosses the carry


def test_offset_bits_match_jax_at_every_start():
    """The offset key's bits for [start, start+n) are that slice of JAX's own bits."""
    from weightgen import prng

    key = jax.random.key(77)
    words = prng.key_words(key)
    full = np.asarray(jax.random.bits(key, (1000,)))
    for start, n in [(0, 1000), (1, 5), (500, 499), (999, 1)]:
        part = np.asarray(jax.random.bits(prng.wrap(prng.offset_key_data(words, start)), (n,)))
        assert np.array_equal(part, full[start : start + n])


@pytest.mark.parametrize(
    ("init", "shape", "rows"),
    [
        ("normal", (61, 67), [0]),
        ("normal", (61, 67), [60, 3, -1]),  # -1 is 60 again: at[] semantics
        ("he-normal", (3, 3, 16, 8), [1]),
        ("orthogonal", (40, 30), [7, 39]),
        ("ones", (5,), [2]),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_zero_rows_is_jax_at_rows_set_zero(init, shape, rows, dtype):
    spec = make_tensor(init, shape, dtype=dtype, seed=13, zero_rows=rows)
    expected = np.asarray(jax.numpy.asarray(reference(spec)).at[np.array(rows)].set(0))
    assert same_bytes(generated(spec, chunk_elems=97), expected)
    assert same_bytes(generated(spec, chunk_elems=97, devices=jax.devices()), expected)


@pytest.mark.parametrize(
    ("init", "params", "offset", "dtype", "sample_dtype"),
    [
        ("uniform", {"scale": 16.0}, 0.0, "float32", "float32"),
        ("uniform", {"scale": 15.99}, 0.01, "float32", "float32"),  # Qwen3-Next's A_log
        ("uniform", {"scale": 15.99}, 0.01, "bfloat16", "float32"),
        ("uniform", {"scale": 16.0}, 0.0, "bfloat16", "bfloat16"),  # exact zeros: -inf
        ("truncated-normal", {"stddev": 0.5, "lower": 0.0, "upper": 3.0}, 0.0, "float16", None),
        ("constant", {"value": 2.5}, 0.5, "float32", None),
    ],
)
def test_transform_log_is_jax_op_by_op(init, params, offset, dtype, sample_dtype):
    """A spec's transform {"name": "log", "offset": o} is, byte for byte,
    jnp.log(init(key, shape, sample_dtype) + o).astype(dtype), written with JAX alone (o = 0:
    jnp.log(init(...))), whatever the chunk size and device count."""
    shape = (257, 33)
    spec = make_tensor(
        init,
        shape,
        params=params,
        dtype=dtype,
        sample_dtype=sample_dtype,
        seed=9,
        transform={"name": "log", "offset": offset},
    )
    jax_init = getattr(jax.nn.initializers, spec.init.jax_name)(**params)
    drawn = jax_init(jax.random.key(9), shape, spec.sample_dtype.numpy)
    expected = np.asarray(jnp.log(drawn + offset if offset else drawn).astype(spec.dtype.numpy))
    if sample_dtype == "bfloat16":
        assert np.isneginf(expected).any()  # log(0) = -inf is part of the contract too
    for chunk, count in ((97, 1), (2**20, 1), (1000, 4)):
        got = generated(spec, chunk_elems=chunk, devices=jax.devices()[:count])
        assert same_bytes(got, expected), (chunk, count)


@settings(max_examples=40, deadline=None)
@given(
    init=st.sampled_from(["normal", "truncated-normal", "orthogonal"]),
    bounds=st.tuples(st.integers(0, 61 * 67), st.integers(0, 61 * 67)).map(sorted),
    chunk=st.sampled_from([1, 13, 97, 4096]),
)
def test_any_range_of_a_tensor_is_that_slice(init, bounds, chunk):
    """What one writer of many generates: elements [start, stop) alone, exactly."""
    from weightgen.engine import Engine

    spec = make_tensor(init, (61, 67), seed=21, zero_rows=[2])
    start, stop = bounds
    part = list(Engine(jax.devices()[:1], chunk).chunks(spec, start, stop))
    got = np.concatenate([*part, np.empty(0, np.float32)])
    assert same_bytes(got, generated(spec).reshape(-1)[start:stop])
