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
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import define_prng_impl, threefry2x32_p

_U32 = np.dtype(np.uint32)
_UINT = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def _counters(start_hi, start_lo, shape):
    """The 64-bit flat indices ``start + iota(shape)`` as (high, low) uint32 words."""
    lo = start_lo + lax.iota(_U32, math.prod(shape))
    hi = start_hi + (lo < start_lo).astype(_U32)  # carry out of the low word
    return hi.reshape(shape), lo.reshape(shape)


def _random_bits(key, bit_width, shape):
    counts_hi, counts_lo = _counters(key[2], key[3], shape)
    bits1, bits2 = threefry2x32_p.bind(key[0], key[1], counts_hi, counts_lo)
    # The same combination as JAX's partitionable threefry.
    dtype = _UINT[bit_width]
    if bit_width == 64:
        high = lax.convert_element_type(bits1, dtype)
        low = lax.convert_element_type(bits2, dtype)
        return lax.shift_left(high, jnp.asarray(32, dtype=dtype)) | low
    if bit_width == 32:
        return bits1 ^ bits2
    return lax.convert_element_type(bits1 ^ bits2, dtype)


def _split(key, shape):
    """Threefry's partitionable split of the key words; the offset travels unchanged."""
    counts_hi = jnp.zeros(shape, _U32)
    counts_lo = lax.iota(_U32, math.prod(shape)).reshape(shape)
    bits1, bits2 = threefry2x32_p.bind(key[0], key[1], counts_hi, counts_lo)
    offset = [jnp.broadcast_to(key[i], shape) for i in (2, 3)]
    return jnp.stack([bits1, bits2, *offset], axis=-1)


def _unsupported(*_args):
    raise NotImplementedError("weightgen's offset keys are made from key data, not seeds")


OFFSET_THREEFRY = define_prng_impl(
    key_shape=(4,),
    seed=_unsupported,
    split=_split,
    random_bits=_random_bits,
    fold_in=_unsupported,
    name="weightgen_offset_threefry2x32",
    tag="wgo",
)


def check_config() -> None:
    """Streaming is exact only under JAX's default partitionable threefry."""
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


def base_key(seed: int, fold_in: int | None = None) -> jax.Array:
    """``jax.random.key(seed)``, folded with ``fold_in`` when given (the spec key rule)."""
    key = jax.random.key(seed)
    if fold_in is not None:
        key = jax.random.fold_in(key, fold_in)
    return key


def key_words(key: jax.Array) -> tuple[int, int]:
    """The two uint32 words of a threefry key."""
    words = np.asarray(jax.random.key_data(key), dtype=_U32)
    return int(words[0]), int(words[1])


def key_hex(seed: int, fold_in: int | None = None) -> str:
    """The key data of ``base_key(seed, fold_in)`` as 16 hex digits (recorded in manifests)."""
    words = key_words(base_key(seed, fold_in))
    return f"{words[0]:08x}{words[1]:08x}"


def offset_key_data(words: tuple[int, int], flat_start: int) -> np.ndarray:
    """Key data for OFFSET_THREEFRY: the key words and the 64-bit start of a flat range."""
    return np.array([words[0], words[1], flat_start >> 32, flat_start & 0xFFFFFFFF], _U32)


def wrap(key_data) -> jax.Array:
    return jax.random.wrap_key_data(key_data, impl=OFFSET_THREEFRY)
