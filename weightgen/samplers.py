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


def _materialize(values):
    """An eager-op boundary inside a jit: what JAX rounds and stores, we round and store."""
    return jax.lax.optimization_barrier(values)


def _arg(value) -> np.ndarray:
    """A Python scalar as JAX passes it into a jitted sampler: a runtime argument of the
    canonical dtype (float32/int32, or 64-bit under x64), never a foldable constant."""
    return np.asarray(jnp.asarray(value))


# The same operations, in the same order, as jax/_src/nn/initializers.py's private complex
# samplers. JAX runs them eagerly, each op rounded and stored on its own: ``_materialize``
# reproduces those boundaries inside our jit, and the scalar head (``1 - exp(-upper**2)``) is
# computed eagerly, like the coefficients, and passed in.
def _complex_uniform(key, bounds, shape, dtype):
    m = _materialize
    key_r, key_theta = jax.random.split(key)
    real_dtype = np.array(0, dtype).real.dtype
    dtype = np.result_type(real_dtype, np.complex64)  # dtypes.to_complex_dtype
    u_r = m(jax.random.uniform(key_r, shape, real_dtype, *bounds))
    r = m(m(jnp.sqrt(m(2 * u_r))).astype(dtype))
    u_theta = m(jax.random.uniform(key_theta, shape, real_dtype, *bounds))
    theta = m(2 * np.pi * m(u_theta.astype(dtype)))
    return m(r * m(jnp.exp(m(1j * theta))))


def _complex_truncated_normal(key, head, bounds, shape, dtype):
    m = _materialize
    key_r, key_theta = jax.random.split(key)
    real_dtype = np.array(0, dtype).real.dtype
    dtype = np.result_type(real_dtype, np.complex64)  # dtypes.to_complex_dtype
    t = m(head * m(m(jax.random.uniform(key_r, shape, real_dtype, *bounds)).astype(dtype)))
    r = m(jnp.sqrt(m(-m(jnp.log(m(1 - t))))))
    u_theta = m(jax.random.uniform(key_theta, shape, real_dtype, *bounds))
    theta = m(2 * np.pi * m(u_theta.astype(dtype)))
    return m(r * m(jnp.exp(m(1j * theta))))


Draw = Callable[[Any, tuple, int], jax.Array]


def _variance_scaling(args, shape, dtype) -> tuple[tuple, Draw]:
    """jax.nn.initializers.variance_scaling's init, split into eager scalars and a draw."""
    variance = jnp.array(initializers.variance(args, shape), dtype=dtype)
    distribution, real = args["distribution"], not jnp.issubdtype(dtype, jnp.complexfloating)
    unit = (_arg(0.0), _arg(1.0))  # jax.random.uniform's default bounds
    if distribution == "truncated_normal" and real:
        stddev = jnp.sqrt(variance) / jnp.array(_TRUNC_STD_REAL, dtype)
        return (stddev, _arg(-2), _arg(2)), lambda key, c, n: _scaled(
            jax.random.truncated_normal(key, c[1], c[2], (n,), dtype), c[0]
        )
    if distribution == "truncated_normal":
        stddev = jnp.sqrt(variance) / jnp.array(_TRUNC_STD_COMPLEX, dtype)
        head = 1 - jnp.exp(jnp.array(-(2**2), dtype))
        return (stddev, head, *unit), lambda key, c, n: _scaled(
            _complex_truncated_normal(key, c[1], c[2:], (n,), dtype), c[0]
        )
    if distribution == "normal":
        return (jnp.sqrt(variance),), lambda key, c, n: _scaled(
            jax.random.normal(key, (n,), dtype), c[0]
        )
    if real:
        return (jnp.sqrt(3 * variance), _arg(-1), _arg(1.0)), lambda key, c, n: _scaled(
            jax.random.uniform(key, (n,), dtype, c[1], c[2]), c[0]
        )
    return (jnp.sqrt(variance), *unit), lambda key, c, n: _scaled(
        _complex_uniform(key, c[1:], (n,), dtype), c[0]
    )


def _scaled(values, coefficient):
    # JAX multiplies eagerly, outside the sampler's jit: the barrier keeps XLA from fusing
    # the two into one expression with different rounding.
    return _materialize(values) * coefficient


def elementwise(spec: TensorSpec) -> tuple[tuple[np.ndarray, ...], Draw]:
    """``(coefficients, draw)``; ``draw(key, coefficients, n)`` -> n values in ``spec.dtype``.

    ``coefficients`` are host scalars: what JAX computes eagerly from the parameters and the
    full shape, and the scalars it passes into its jitted samplers as runtime arguments. The
    kernel takes them as arguments, so it compiles once per family and dtype, not per tensor,
    and XLA cannot constant-fold them into a differently rounded result.
    """
    args = spec.init.family_args(spec.params)
    dtype, out = spec.sample_dtype.numpy, spec.dtype.numpy
    family = spec.init.family
    draw: Draw
    if family == "constant":
        coefficients = (jnp.full((), args["value"], dtype),)
        draw = lambda key, c, n: jnp.broadcast_to(c[0], (n,))  # noqa: E731
    elif family == "uniform":
        coefficients = (jnp.array(args["scale"], dtype), _arg(0.0), _arg(1.0))
        draw = lambda key, c, n: _scaled(  # noqa: E731
            jax.random.uniform(key, (n,), dtype, c[1], c[2]), c[0]
        )
    elif family == "normal":
        coefficients = (jnp.array(args["stddev"], dtype),)
        draw = lambda key, c, n: _scaled(jax.random.normal(key, (n,), dtype), c[0])  # noqa: E731
    elif family == "truncated_normal":
        coefficients = (jnp.array(args["stddev"], dtype), _arg(args["lower"]), _arg(args["upper"]))
        draw = lambda key, c, n: _scaled(  # noqa: E731
            jax.random.truncated_normal(key, c[1], c[2], (n,), dtype), c[0]
        )
    elif family == "variance_scaling":
        coefficients, draw = _variance_scaling(args, spec.shape, dtype)
    else:
        raise AssertionError(family)
    if out != dtype and spec.transform is None:  # with a transform, finish() casts
        inner = draw
        draw = lambda key, c, n: _materialize(inner(key, c, n)).astype(out)  # noqa: E731
    return tuple(np.asarray(c) for c in coefficients), draw


# The transforms of initializers.TRANSFORMS, as JAX runs them: x the values drawn.
_TRANSFORMS: dict[str, Callable[..., jax.Array]] = {
    "log": lambda x, offset: jnp.log(x + offset),
}


def finish(spec: TensorSpec) -> Callable[[jax.Array], jax.Array] | None:
    """What runs on each chunk after the kernel (None: nothing): the spec's transform, then
    the cast to the dtype, as eager JAX ops, each compiled and rounded on its own, exactly as
    ``jnp.log(init(key, shape, sample_dtype) + offset).astype(dtype)`` runs. Not inside the
    kernel: there XLA fuses across optimization barriers and contracts ``u * scale +
    offset`` into one fma (measured on CPU, jax 0.10.2: a quarter of the sums differ)."""
    if spec.transform is None:
        return None
    function = _TRANSFORMS[spec.transform.name]
    params = [value for _, value in spec.transform.params]  # Python floats: weakly typed
    out = spec.dtype.numpy

    def run(values: jax.Array) -> jax.Array:
        values = function(values, *params)
        return values if values.dtype == out else values.astype(out)

    return run


def kernel_signature(spec: TensorSpec) -> tuple:
    """What the compiled kernel depends on, besides its size: tensors sharing it share a jit."""
    args = spec.init.family_args(spec.params)
    static = {k: args[k] for k in ("distribution", "lower", "upper") if k in args}
    return (
        spec.init.family,
        spec.sample_dtype.name,
        spec.dtype.name,
        tuple(sorted(static.items())),
        spec.transform is not None,  # then the kernel stops at the sample dtype
    )


def whole(spec: TensorSpec, key: jax.Array) -> jax.Array:
    """The whole tensor from ``jax.nn.initializers`` itself (QR needs every element)."""
    builder = getattr(jax.nn.initializers, spec.init.jax_name)
    init = builder(**spec.params) if spec.init.jax_builder else builder
    values = init(key, spec.shape, spec.sample_dtype.numpy)
    if spec.sample_dtype != spec.dtype:
        values = values.astype(spec.dtype.numpy)
    return values
