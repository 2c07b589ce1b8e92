"""Counter-based random bits for any flat range of a tensor, bit-identical to JAX.

With ``jax_threefry_partitionable`` on (JAX's default since 0.5), the bits of the element at
row-major flat index ``i`` are ``threefry2x32(key, (i >> 32, i & 0xffffffff))``, combined per
bit width (see ``jax._src.random.threefry2x32._threefry_random_bits_partitionable``). So any
range ``[start, start + n)`` can be drawn on its own.

Rather than re-implement JAX's float maps (uniform's mantissa fill, normal's ``erf_inv``, the
truncated normal's clamp, the complex variants' key split), weightgen defines a PRNG
implementation whose key carries a flat offset: ``[k0, k1, start_hi, start_lo]``. Its
``random_bits`` is threefry on ``start + iota``; its ``split`` is threefry's and keeps the
offset. ``jax.random.normal(offset_key, (n,), dtype)`` then runs JAX's own code and returns
exactly the elements ``start .. start + n`` of ``jax.random.normal(key, shape, dtype)``.

The hash itself comes in two forms with the same bits. JAX's primitive ``threefry2x32_p`` is
lowered on CPU as a rolled loop (five trips of four rounds, every trip reading and writing
the whole chunk), at a third of the speed of the unrolled form JAX emits on other platforms.
``threefry2x32`` below is the public Threefry-2x32 algorithm (20 rounds, Random123's
rotations and key schedule, as in ``jax/_src/random/threefry2x32.py``) written with array
operators and unrolled at trace time, so XLA fuses it with the counters and the float map
into one loop. It is used on CPU; on GPU and TPU JAX's own choice stays (a CUDA kernel, the
unrolled lowering). ``WEIGHTGEN_THREEFRY`` overrides: ``jax`` (JAX's primitive everywhere,
the old path, for comparisons), ``unrolled`` (weightgen's everywhere), ``auto`` (default).

The same function runs on numpy arrays: ``derive_words`` computes the keys of many tensors at
once (``jax.random.key`` and ``fold_in`` are threefry on two words), with no JAX dispatch.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import define_prng_impl, threefry2x32_p

_U32 = np.dtype(np.uint32)
_UINT = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}

THREEFRY_ENV = "WEIGHTGEN_THREEFRY"
THREEFRY_CHOICES = ("auto", "unrolled", "jax")

# Threefry-2x32, 20 rounds (Salmon et al. 2011, Random123): rotation constants of the even
# and odd groups of four rounds, and the key schedule's parity constant.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA


def threefry2x32(k1, k2, x1, x2):
    """Threefry-2x32 of the counter words ``(x1, x2)`` under the key ``(k1, k2)``.

    Bit-identical to ``threefry2x32_p.bind(k1, k2, x1, x2)``. Written with operators only,
    so it runs unrolled on JAX arrays inside a jit and on numpy uint32 arrays (whose
    additions wrap modulo 2**32 as uint32 arithmetic must).
    """
    u32 = np.uint32
    keys = (k1, k2, k1 ^ k2 ^ u32(_PARITY))
    x1 = x1 + keys[0]
    x2 = x2 + keys[1]
    for group in range(5):
        for r in _ROTATIONS[group % 2]:
            x1 = x1 + x2
            x2 = ((x2 << u32(r)) | (x2 >> u32(32 - r))) ^ x1
        x1 = x1 + keys[(group + 1) % 3]
        x2 = x2 + keys[(group + 2) % 3] + u32(group + 1)
    return x1, x2


def _primitive(k1, k2, x1, x2):
    return threefry2x32_p.bind(k1, k2, x1, x2)


def _counters(start_hi, start_lo, shape):
    """The 64-bit flat indices ``start + iota(shape)`` as (high, low) uint32 words."""
    lo = start_lo + lax.iota(_U32, math.prod(shape))
    hi = start_hi + (lo < start_lo).astype(_U32)  # carry out of the low word
    return hi.reshape(shape), lo.reshape(shape)


def _offset_impl(threefry, name: str, tag: str):
    """A PRNG implementation whose keys carry a flat offset, hashing with ``threefry``."""

    def random_bits(key, bit_width, shape):
        counts_hi, counts_lo = _counters(key[2], key[3], shape)
        bits1, bits2 = threefry(key[0], key[1], counts_hi, counts_lo)
        # The same combination as JAX's partitionable threefry.
        dtype = _UINT[bit_width]
        if bit_width == 64:
            high = lax.convert_element_type(bits1, dtype)
            low = lax.convert_element_type(bits2, dtype)
            return lax.shift_left(high, jnp.asarray(32, dtype=dtype)) | low
        if bit_width == 32:
            return bits1 ^ bits2
        return lax.convert_element_type(bits1 ^ bits2, dtype)

    def split(key, shape):
        """Threefry's partitionable split of the key words; the offset travels unchanged."""
        counts_hi = jnp.zeros(shape, _U32)
        counts_lo = lax.iota(_U32, math.prod(shape)).reshape(shape)
        bits1, bits2 = threefry(key[0], key[1], counts_hi, counts_lo)
        offset = [jnp.broadcast_to(key[i], shape) for i in (2, 3)]
        return jnp.stack([bits1, bits2, *offset], axis=-1)

    return define_prng_impl(
        key_shape=(4,),
        seed=_unsupported,
        split=split,
        random_bits=random_bits,
        fold_in=_unsupported,
        name=name,
        tag=tag,
    )


def _unsupported(*_args):
    raise NotImplementedError("weightgen's offset keys are made from key data, not seeds")


# JAX's primitive (its lowering per platform) and weightgen's unrolled form: the same bits.
OFFSET_THREEFRY = _offset_impl(_primitive, "weightgen_offset_threefry2x32", "wgo")
OFFSET_THREEFRY_UNROLLED = _offset_impl(
    threefry2x32, "weightgen_offset_threefry2x32_unrolled", "wgu"
)


def threefry_choice() -> str:
    """``WEIGHTGEN_THREEFRY``: ``auto`` (default), ``unrolled`` or ``jax``."""
    from .errors import UsageError

    value = os.environ.get(THREEFRY_ENV, "").strip().lower() or "auto"
    if value not in THREEFRY_CHOICES:
        raise UsageError(
            f"{THREEFRY_ENV}={value}: expected one of {', '.join(THREEFRY_CHOICES)} (or unset it)"
        )
    return value


def unrolled_for(platform: str, choice: str | None = None) -> bool:
    """Whether kernels on ``platform`` hash with weightgen's unrolled threefry."""
    choice = threefry_choice() if choice is None else choice
    return choice == "unrolled" or (choice == "auto" and platform == "cpu")


def check_config(remember: Path | None = None) -> None:
    """Streaming is exact only under JAX's default partitionable threefry; ``derive_words``
    only while this JAX derives keys as it does. That last check costs eager JAX calls (about
    0.1 s of every start-up): with ``remember`` (a folder: the compile cache's) it runs once
    per JAX and jaxlib version, and a file there says it passed."""
    from .errors import GenerationError

    if not jax.config.jax_threefry_partitionable:
        raise GenerationError(
            "jax_threefry_partitionable is off; weightgen reproduces JAX's default (on). "
            "Unset JAX_THREEFRY_PARTITIONABLE or set it to 1"
        )
    if jax.config.jax_default_prng_impl != "threefry2x32":
        raise GenerationError(
            f"jax_default_prng_impl is {jax.config.jax_default_prng_impl}; weightgen supports "
            "JAX's default, threefry2x32"
        )
    if getattr(jax.config, "jax_random_seed_offset", 0):
        raise GenerationError(
            "jax_random_seed_offset is set; weightgen's keys are jax.random.key(seed) without "
            "an offset. Unset JAX_RANDOM_SEED_OFFSET or fold the offset into --seed"
        )
    # derive_words computes JAX's key derivation without JAX: hold it to this JAX's own.
    import jaxlib

    passed = None
    if remember is not None:
        passed = remember / f"keys-checked-jax-{jax.__version__}-jaxlib-{jaxlib.__version__}"
        if passed.is_file():
            return
    for seed, data in ((7, 0x9E3779B9), (2**32 - 1, None)):
        key = jax.random.key(seed)
        if data is not None:
            key = jax.random.fold_in(key, data)
        if key_words(key) != derive(seed, data):
            raise GenerationError(
                f"this JAX ({jax.__version__}) derives keys from seeds differently from the "
                "threefry rule weightgen implements; use a tested JAX (see constraints.txt)"
            )
    if passed is not None:
        with contextlib.suppress(OSError):  # unwritable: only checking again next time
            passed.touch()


def derive_words(seeds: Sequence[int], fold_ins: Sequence[int | None]) -> np.ndarray:
    """The key words of many tensors at once, as an ``(n, 2)`` uint32 array: row ``i`` is
    the key data of ``jax.random.key(seeds[i])``, folded with ``fold_ins[i]`` where it is not
    None (the spec key rule), computed in numpy.

    ``jax.random.key(seed)`` for ``0 <= seed < 2**32`` is the words ``(0, seed)`` (JAX's
    ``threefry_seed``: the high and low 32 bits), and ``fold_in(key, data)`` is
    ``threefry2x32(key, (0, data))`` (JAX's ``threefry_2x32`` of ``threefry_seed(data)``).
    """
    seed = np.asarray(seeds, dtype=np.int64).reshape(-1)
    if seed.size and (seed.min() < 0 or seed.max() >= 2**32):
        raise ValueError("seeds must lie in 0 .. 2**32-1")
    data = np.array([0 if f is None else f for f in fold_ins], dtype=np.int64).reshape(-1)
    folded = np.array([f is not None for f in fold_ins], dtype=bool).reshape(-1)
    words = np.stack([np.zeros_like(seed), seed], axis=-1).astype(_U32)
    if folded.any():
        k1, k2 = words[folded, 0], words[folded, 1]
        zero = np.zeros_like(k1)
        y1, y2 = threefry2x32(k1, k2, zero, (data[folded] & 0xFFFFFFFF).astype(_U32))
        words[folded, 0], words[folded, 1] = y1, y2
    return words


def derive(seed: int, fold_in: int | None = None) -> tuple[int, int]:
    """The key words of ``jax.random.key(seed)``, folded with ``fold_in`` when given."""
    row = derive_words([seed], [fold_in])[0]
    return int(row[0]), int(row[1])


def key_words(key: jax.Array) -> tuple[int, int]:
    """The two uint32 words of a threefry key."""
    words = np.asarray(jax.random.key_data(key), dtype=_U32)
    return int(words[0]), int(words[1])


def words_hex(words) -> str:
    """Two key words as 16 hex digits (the ``key`` recorded in manifests)."""
    return f"{int(words[0]):08x}{int(words[1]):08x}"


def offset_key_data(words: tuple[int, int], flat_start: int) -> np.ndarray:
    """Key data for the offset PRNG: the key words and the 64-bit start of a flat range."""
    return np.array([words[0], words[1], flat_start >> 32, flat_start & 0xFFFFFFFF], _U32)


def offset_key_rows(words: np.ndarray, flat_starts: np.ndarray) -> np.ndarray:
    """``offset_key_data`` of many ranges at once: ``(n, 2)`` key words and ``n`` starts
    give ``(n, 4)`` key data, row ``i`` that of ``words[i]`` from ``flat_starts[i]``."""
    starts = np.asarray(flat_starts, np.uint64)
    rows = np.empty((len(starts), 4), _U32)
    rows[:, :2] = words
    rows[:, 2] = starts >> np.uint64(32)
    rows[:, 3] = starts & np.uint64(0xFFFFFFFF)
    return rows


def wrap(key_data, *, unrolled: bool = False) -> jax.Array:
    """An offset key: weightgen's unrolled threefry, or JAX's primitive (the default)."""
    impl = OFFSET_THREEFRY_UNROLLED if unrolled else OFFSET_THREEFRY
    return jax.random.wrap_key_data(key_data, impl=impl)
