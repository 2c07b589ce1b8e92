"""How each initializer family turns a key into values: JAX's own code, chunk by chunk.

An elementwise family is split in two, exactly where ``jax.nn.initializers`` splits it:
``coefficients`` are the scalars JAX computes eagerly from the parameters and the full shape
(``jnp.sqrt(variance) / 0.8796...``), computed here the same way; ``draw`` is the rest, run
inside the jit kernel on an offset key (see prng.py) for one chunk of the flattened tensor.

The whole-tensor families (orthogonal, delta-orthogonal) call ``jax.nn.initializers`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import initializers
from .plan import TensorSpec

# Standard deviations of a standard normal truncated to (-2, 2), real and complex; the
# constants of jax.nn.initializers.variance_scaling.
_TRUNC_STD_REAL = 0.87962566103423978
_TRUNC_STD_COMPLEX = 0.95311164380491208


# Verbatim from jax/_src/nn/initializers.py (private there), so that complex variance scaling
# runs the same operations in the same order.
def _complex_uniform(key, shape, dtype):
    key_r, key_theta = jax.random.split(key)
    real_dtype = np.array(0, dtype).real.dtype
    dtype = np.result_type(real_dtype, np.complex64)  # dtypes.to_complex_dtype
    r = jnp.sqrt(2 * jax.random.uniform(key_r, shape, real_dtype)).astype(dtype)
    theta = 2 * np.pi * jax.random.uniform(key_theta, shape, real_dtype).astype(dtype)
    return r * jnp.exp(1j * theta)


def _complex_truncated_normal(key, upper, shape, dtype):
    key_r, key_theta = jax.random.split(key)
    real_dtype = np.array(0, dtype).real.dtype
    dtype = np.result_type(real_dtype, np.complex64)  # dtypes.to_complex_dtype
    t = (1 - jnp.exp(jnp.array(-(upper**2), dtype))) * jax.random.uniform(
        key_r, shape, real_dtype
    ).astype(dtype)
    r = jnp.sqrt(-jnp.log(1 - t))
    theta = 2 * np.pi * jax.random.uniform(key_theta, shape, real_dtype).astype(dtype)
    return r * jnp.exp(1j * theta)


def _variance_scaling(args, shape, dtype):
    variance = jnp.array(initializers.variance(args, shape), dtype=dtype)
    distribution, real = args["distribution"], not jnp.issubdtype(dtype, jnp.complexfloating)
    if distribution == "truncated_normal":
        if real:
            stddev = jnp.sqrt(variance) / jnp.array(_TRUNC_STD_REAL, dtype)
            return stddev, lambda key, n: jax.random.truncated_normal(key, -2, 2, (n,), dtype)
        stddev = jnp.sqrt(variance) / jnp.array(_TRUNC_STD_COMPLEX, dtype)
        return stddev, lambda key, n: _complex_truncated_normal(key, 2, (n,), dtype)
    if distribution == "normal":
        return jnp.sqrt(variance), lambda key, n: jax.random.normal(key, (n,), dtype)
    if real:
        return jnp.sqrt(3 * variance), lambda key, n: jax.random.uniform(key, (n,), dtype, -1)
    return jnp.sqrt(variance), lambda key, n: _complex_uniform(key, (n,), dtype)


def _constant(args, shape, dtype):
    return jnp.full((), args["value"], dtype), lambda coef, n: jnp.broadcast_to(coef, (n,))


def elementwise(spec: TensorSpec) -> tuple[np.ndarray, Callable[[Any, Any, int], jax.Array]]:
    """``(coefficient, draw)`` with ``draw(key, coefficient, n)`` -> n values in ``spec.dtype``.

    ``coefficient`` is a host scalar in the sample dtype (so the kernel takes it as an argument
    and is compiled once per family and dtype, not per tensor).
    """
    args = spec.init.family_args(spec.params)
    dtype, out = spec.sample_dtype.numpy, spec.dtype.numpy
    family = spec.init.family
    if family == "constant":
        coef, fill = _constant(args, spec.shape, dtype)
        draw = lambda key, c, n: fill(c, n)  # noqa: E731
    else:
        if family == "uniform":
            coef = jnp.array(args["scale"], dtype)
            sample = lambda key, n: jax.random.uniform(key, (n,), dtype)  # noqa: E731
        elif family == "normal":
            coef = jnp.array(args["stddev"], dtype)
            sample = lambda key, n: jax.random.normal(key, (n,), dtype)  # noqa: E731
        elif family == "truncated_normal":
            coef = jnp.array(args["stddev"], dtype)
            lower, upper = args["lower"], args["upper"]
            sample = lambda key, n: jax.random.truncated_normal(  # noqa: E731
                key, lower, upper, (n,), dtype
            )
        elif family == "variance_scaling":
            coef, sample = _variance_scaling(args, spec.shape, dtype)
        else:
            raise AssertionError(family)
        draw = lambda key, c, n: sample(key, n) * c  # noqa: E731
    if out != dtype:
        inner = draw
        draw = lambda key, c, n: inner(key, c, n).astype(out)  # noqa: E731
    return np.asarray(coef), draw


def kernel_signature(spec: TensorSpec) -> tuple:
    """What the compiled kernel depends on, besides its size: tensors sharing it share a jit."""
    args = spec.init.family_args(spec.params)
    static = {k: args[k] for k in ("distribution", "lower", "upper") if k in args}
    return (
        spec.init.family,
        spec.sample_dtype.name,
        spec.dtype.name,
        tuple(sorted(static.items())),
    )


def whole(spec: TensorSpec, key: jax.Array) -> jax.Array:
    """The whole tensor from ``jax.nn.initializers`` itself (QR needs every element)."""
    builder = getattr(jax.nn.initializers, spec.init.jax_name)
    init = builder(**spec.params) if spec.init.jax_builder else builder
    values = init(key, spec.shape, spec.sample_dtype.numpy)
    if spec.sample_dtype != spec.dtype:
        values = values.astype(spec.dtype.numpy)
    return values
