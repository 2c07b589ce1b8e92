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


# --- The offset PRNG's bits: weightgen's unrolled threefry and JAX's primitive alike -------

UINT = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def _primitive_words(words, start, n):
    """JAX's threefry2x32_p on the 64-bit counters start .. start+n, as (high, low) words."""
    from jax.extend.random import threefry2x32_p

    index = np.arange(start, start + n, dtype=np.uint64)
    hi = (index >> np.uint64(32)).astype(np.uint32)
    lo = (index & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    b1, b2 = threefry2x32_p.bind(np.uint32(words[0]), np.uint32(words[1]), hi, lo)
    return np.asarray(b1), np.asarray(b2), hi


def _combined(b1, b2, bit_width):
    """JAX's partitionable combination of the two words (threefry2x32.py)."""
    if bit_width == 64:
        return (b1.astype(np.uint64) << np.uint64(32)) | b2.astype(np.uint64)
    return (b1 ^ b2).astype(UINT[bit_width])


def test_threefry2x32_is_jax_primitive_on_jax_and_numpy_arrays():
    """weightgen's Threefry-2x32 (jit-unrolled, and on numpy uint32) against JAX's own."""
    from jax.extend.random import threefry2x32_p

    from weightgen import prng

    rng = np.random.default_rng(0)
    k1, k2, x1, x2 = (
        rng.integers(0, 2**32, 4096, dtype=np.uint64).astype(np.uint32) for _ in "abcd"
    )
    edges = np.array([0, 1, 2**31, 2**32 - 1], np.uint32)
    x1[: edges.size], x2[: edges.size] = edges, edges[::-1]
    k1[: edges.size] = edges
    want = [np.asarray(w) for w in threefry2x32_p.bind(k1, k2, x1, x2)]
    traced = [np.asarray(w) for w in jax.jit(prng.threefry2x32)(k1, k2, x1, x2)]
    host = prng.threefry2x32(k1, k2, x1, x2)
    for got in (traced, host):
        assert all(np.array_equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("unrolled", [True, False], ids=["unrolled", "jax"])
@pytest.mark.parametrize("bit_width", [8, 16, 32, 64])
@pytest.mark.parametrize("start", [2**32 - 5, 2**33 - 2, 3 * 2**40 + 2**32 - 1])
def test_offset_bits_across_the_2_32_boundary(unrolled, bit_width, start):
    """Flat indices past 2**32 carry into the high counter word, as JAX's 64-bit iota does:
    the offset key's bits are threefry2x32_p on (index >> 32, index & 0xffffffff)."""
    from conftest import x64

    from weightgen import prng

    words = prng.derive(123, 0xDEADBEEF)
    n = 11
    b1, b2, hi = _primitive_words(words, start, n)
    assert len(set(hi.tolist())) == 2  # the range really crosses a carry
    with x64(bit_width == 64):
        key = prng.wrap(prng.offset_key_data(words, start), unrolled=unrolled)
        draw = jax.jit(lambda k: jax.random.bits(k, (n,), UINT[bit_width]))
        got = np.asarray(draw(key))
    assert got.dtype == UINT[bit_width]
    assert np.array_equal(got, _combined(b1, b2, bit_width))


@pytest.mark.parametrize("unrolled", [True, False], ids=["unrolled", "jax"])
@pytest.mark.parametrize("bit_width", [8, 16, 32, 64])
def test_offset_bits_are_slices_of_jax_random_bits(unrolled, bit_width):
    """For every width, the offset key's bits for [start, start+n) are that slice of
    jax.random.bits(key, (N,)) with JAX's own key."""
    from conftest import x64

    from weightgen import prng

    with x64(bit_width == 64):
        key = jax.random.fold_in(jax.random.key(77), 5)
        words = prng.key_words(key)
        full = np.asarray(jax.random.bits(key, (1000,), UINT[bit_width]))
        for start, n in [(0, 1000), (1, 5), (500, 499), (999, 1)]:
            offset = prng.wrap(prng.offset_key_data(words, start), unrolled=unrolled)
            part = np.asarray(jax.random.bits(offset, (n,), UINT[bit_width]))
            assert np.array_equal(part, full[start : start + n])


@pytest.mark.parametrize("unrolled", [True, False], ids=["unrolled", "jax"])
def test_offset_split_is_jax_split_and_keeps_the_offset(unrolled):
    from weightgen import prng

    key = jax.random.key(2**32 - 1)
    words = prng.key_words(key)
    start = 2**32 + 17
    for count in (2, 3):
        want = np.asarray(jax.random.key_data(jax.random.split(key, count)))
        offset = prng.wrap(prng.offset_key_data(words, start), unrolled=unrolled)
        got = np.asarray(
            jax.random.key_data(jax.jit(jax.random.split, static_argnums=1)(offset, count))
        )
        assert np.array_equal(got[:, :2], want)
        assert (got[:, 2] == 1).all() and (got[:, 3] == 17).all()


@pytest.mark.parametrize("x64_on", [False, True])
def test_derived_keys_are_jax_key_and_fold_in(x64_on):
    """derive_words (numpy, every tensor at once) against jax.random.key and fold_in."""
    from conftest import x64

    from weightgen import prng

    seeds = [0, 1, 42, 2**31 - 1, 2**31, 2**32 - 1]
    data = [None, 0, 1, 2**31, 2**32 - 1, 0x9E3779B9]
    pairs = list(itertools.product(seeds, data))
    with x64(x64_on):
        got = prng.derive_words([s for s, _ in pairs], [d for _, d in pairs])
        for (seed, fold), row in zip(pairs, got.tolist()):
            key = jax.random.key(seed)
            if fold is not None:
                key = jax.random.fold_in(key, fold)
            assert tuple(row) == prng.key_words(key), (seed, fold)


def test_a_jax_deriving_keys_otherwise_is_refused_and_a_pass_is_remembered(tmp_path, monkeypatch):
    """check_config holds derive_words to this JAX's key and fold_in (eager JAX calls, part
    of every start-up), once per JAX version when given a folder to remember the pass in."""
    from weightgen import prng
    from weightgen.errors import GenerationError

    prng.check_config(remember=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [
        f"keys-checked-jax-{jax.__version__}-jaxlib-{__import__('jaxlib').__version__}"
    ]
    with monkeypatch.context() as patch:
        patch.setattr(prng, "derive", lambda seed, data=None: (0, 0))
        prng.check_config(remember=tmp_path)  # remembered: not checked again
        with pytest.raises(GenerationError, match="derives keys from seeds differently"):
            prng.check_config()
        with pytest.raises(GenerationError, match="derives keys from seeds differently"):
            prng.check_config(remember=tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def test_jax_primitive_path_on_request(monkeypatch):
    """WEIGHTGEN_THREEFRY=jax: JAX's own threefry2x32_p (the old path), the same bytes."""
    from weightgen import prng
    from weightgen.engine import Engine
    from weightgen.errors import UsageError

    assert Engine(jax.devices()[:1]).unrolled  # the default on CPU
    monkeypatch.setenv(prng.THREEFRY_ENV, "jax")
    assert not Engine(jax.devices()[:1]).unrolled
    spec = make_tensor("truncated-normal", (61, 67), dtype="bfloat16", seed=8)
    assert same_bytes(generated(spec, chunk_elems=1000), reference(spec))
    monkeypatch.setenv(prng.THREEFRY_ENV, "rolled")
    with pytest.raises(UsageError, match="WEIGHTGEN_THREEFRY"):
        Engine(jax.devices()[:1])


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


def _mixed_small_plan():
    """Small tensors of every family and several dtypes, in runs that share a kernel (and
    so a batched call) and runs that do not."""
    from weightgen.plan import Plan, name_fold_in

    kinds = [
        ("normal", "float32", {}),
        ("he-normal", "bfloat16", {}),
        ("truncated-normal", "float16", {"stddev": 0.5}),
        ("glorot-uniform", "complex64", {}),
        ("uniform", "float32", {"scale": 2.0}),
        ("ones", "bfloat16", {}),
        ("lecun-normal", "float8_e4m3fn", {}),
        ("orthogonal", "float32", {}),
    ]
    specs = []
    for i in range(70):
        init, dtype, params = kinds[(i // 7) % len(kinds)]
        shape = (7 + i % 3, 11) if i % 5 else (3, 5)
        name = f"t{i:03d}"
        specs.append(
            make_tensor(
                init,
                shape,
                dtype=dtype,
                params=params,
                name=name,
                seed=3,
                fold_in=name_fold_in(name),
                zero_rows=[1] if i % 6 == 0 else (),
            )
        )
    return Plan.of(specs)


@pytest.mark.parametrize(
    ("ndev", "chunk", "lanes"), [(1, 256, 1), (4, 512, 1), (1, None, 1), (1, 64, 2)]
)
def test_many_small_tensors_batched_are_jax(ndev, chunk, lanes, monkeypatch):
    """engine.run batches consecutive small tensors into one call (rows of a vmapped
    kernel): every tensor is still jax.nn.initializers' own. With two lanes (a hashing
    run's second CPU device) and small chunks, their chunks alternate between devices."""
    from weightgen import engine as engine_mod

    plan = _mixed_small_plan()
    written: dict[int, list] = {}

    class Memory:
        def write(self, index, offset, chunk):
            written.setdefault(index, []).append((offset, np.array(chunk)))

    monkeypatch.setattr(engine_mod, "LANE_MIN_CHUNKS", 2)  # these tensors are small
    monkeypatch.setattr(engine_mod, "_COMPILED", {})  # a kernel ran here, not in a test before
    eng = engine_mod.Engine(
        jax.devices()[:ndev], chunk, lanes=jax.devices()[:lanes], alternate_chunks=True
    )
    engine_mod.run(eng, plan, Memory())
    if lanes == 1:  # (at 64 elements a chunk, these tensors are chunked, not batched)
        assert any(len(signature) == 3 for signature in eng._kernels)  # some were batches
    on_lane_1 = any(  # a lane-1 kernel that ran (compiled at its first call)
        signature[-2:] == ("on device", 1) and kernel._cache_size() > 0
        for signature, kernel in eng._kernels.items()
    )
    assert on_lane_1 == (lanes == 2)
    for index, spec in enumerate(plan.tensors):
        parts = sorted(written[index], key=lambda part: part[0])
        got = np.concatenate([chunk for _, chunk in parts]).reshape(spec.shape)
        want = reference(spec)
        if spec.zero_rows:
            want = np.asarray(jax.numpy.asarray(want).at[np.array(spec.zero_rows)].set(0))
        assert same_bytes(got, want), spec.describe()


def test_batched_pieces_of_ranges_are_those_slices():
    """Small pieces that start inside their tensors (what one of several writers takes)
    share batched calls, each row drawn from its own start."""
    from weightgen import prng
    from weightgen.engine import Engine, Piece

    a = make_tensor("normal", (61, 67), seed=21, zero_rows=[2])
    b = make_tensor("normal", (30, 7), seed=22)
    # 65 to 128 elements each: one size class, so one kernel (a batch of 4, then 1).
    bounds = [(a, 5, 100), (b, 0, 100), (a, 100, 200), (b, 110, 210), (a, 4000, a.numel)]
    pieces = [Piece(t, lo, hi, prng.derive(t.seed)) for t, lo, hi in bounds]
    engine = Engine(jax.devices()[:1], 1024)
    calls = list(engine.stream(pieces))
    assert [len(call) for call in calls] == [4, 1]
    got = {number: chunk for call in calls for number, _, chunk in call}
    for number, (spec, lo, hi) in enumerate(bounds):
        want = generated(spec).reshape(-1)[lo:hi]
        assert same_bytes(got[number], want), (number, lo, hi)


def test_parameters_equal_in_python_but_not_in_bytes_are_kept_apart():
    """The engine caches kernels and coefficients per parameter set: -0.0 == 0.0 and
    1 == 1.0 in Python, yet constant(-0.0) writes a sign bit JAX keeps. Each tensor of one
    plan is still JAX's own."""
    from weightgen import engine as engine_mod
    from weightgen.plan import Plan

    specs = [
        make_tensor("constant", (3, 5), params={"value": value}, name=f"c{i}", dtype=dtype)
        for i, (value, dtype) in enumerate(
            [(0.0, "float32"), (-0.0, "float32"), (-0.0, "bfloat16"), (0.0, "bfloat16")]
        )
    ]
    written: dict[int, np.ndarray] = {}

    class Memory:
        def write(self, index, offset, chunk):
            written[index] = np.array(chunk)

    engine_mod.run(engine_mod.Engine(jax.devices()[:1], 256), Plan.of(specs), Memory())
    for index, spec in enumerate(specs):
        assert same_bytes(written[index].reshape(spec.shape), reference(spec)), spec.describe()
    assert np.signbit(written[1]).all() and not np.signbit(written[0]).any()
