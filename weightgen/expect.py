"""What a tensor's recorded rule implies about its values, and whether measured statistics
agree within sampling error: ``inspect``'s check that the init is what was asked for.

Pure Python (no JAX): the moments of each initializer's distribution in closed form, from
the same resolved parameters and fan arithmetic the generator uses (initializers.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from . import initializers
from .plan import TensorSpec

# std of a standard normal truncated to (-2, 2): jax.nn.initializers.variance_scaling's constant
_TRUNC_STD_REAL = 0.87962566103423978
SIGMAS = 5.0  # how many standard errors a statistic may stray before it is marked


@dataclass(frozen=True)
class Expected:
    """Moments of a tensor's distribution (before zero_rows), and what else is certain."""

    mean: float
    std: float
    kurtosis: float = 3.0  # E[(x - mean)^4] / std^4: sets the sampling error of the std
    low: float | None = None  # no value below (truncation, uniform's range)
    high: float | None = None
    value: float | None = None  # every element equals it (constants)

    def as_dict(self) -> dict:
        return asdict(self)


def _phi(x: float) -> float:
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def truncated_moments(lower: float, upper: float) -> tuple[float, float, float]:
    """(mean, std, kurtosis) of a standard normal truncated to (lower, upper)."""
    mass = _cdf(upper) - _cdf(lower)
    if mass <= 0:
        return 0.0, 0.0, 3.0

    def term(x: float, power: int) -> float:  # x**power * pdf(x), 0 at infinity
        return 0.0 if math.isinf(x) else x**power * _phi(x)

    # Raw moments m_k = E[Z^k] by the recurrence m_k = (k-1) m_{k-2} - [x^{k-1} phi]_a^b / mass.
    moments = [1.0, (term(lower, 0) - term(upper, 0)) / mass]
    for k in range(2, 5):
        moments.append((k - 1) * moments[k - 2] + (term(lower, k - 1) - term(upper, k - 1)) / mass)
    m1, m2, m3, m4 = moments[1:]
    variance = max(m2 - m1 * m1, 0.0)
    central4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1**4
    kurtosis = central4 / variance**2 if variance > 0 else 3.0
    return m1, math.sqrt(variance), kurtosis


def expected(spec: TensorSpec) -> Expected | None:
    """The distribution ``spec``'s rule draws from; None where it has no simple form
    (complex values, a transform of anything but a uniform or a constant)."""
    if spec.dtype.is_complex:
        return None
    if spec.transform is not None:
        return _transformed(spec)
    args = spec.init.family_args(spec.params)
    family = spec.init.family
    if family == "constant":
        value = float(args["value"])
        return Expected(value, 0.0, value=value, low=value, high=value)
    if family == "uniform":
        scale = float(args["scale"])
        return Expected(scale / 2, abs(scale) / math.sqrt(12), 1.8, *sorted((0.0, scale)))
    if family == "normal":
        return Expected(0.0, abs(float(args["stddev"])))
    if family == "truncated_normal":
        stddev, lower, upper = float(args["stddev"]), float(args["lower"]), float(args["upper"])
        mean, std, kurtosis = truncated_moments(lower, upper)
        return Expected(stddev * mean, abs(stddev) * std, kurtosis, stddev * lower, stddev * upper)
    if family == "variance_scaling":
        variance = initializers.variance(args, spec.shape)
        distribution = args["distribution"]
        if distribution == "normal":
            return Expected(0.0, math.sqrt(variance))
        if distribution == "uniform":
            limit = math.sqrt(3 * variance)
            return Expected(0.0, limit / math.sqrt(3), 1.8, -limit, limit)
        stddev = math.sqrt(variance) / _TRUNC_STD_REAL
        _, std, kurtosis = truncated_moments(-2.0, 2.0)
        return Expected(0.0, stddev * std, kurtosis, -2 * stddev, 2 * stddev)
    if family in ("orthogonal", "delta_orthogonal"):
        # Orthonormal rows or columns: the squares sum to min(rows, columns), times scale**2.
        shape = spec.shape if family == "orthogonal" else spec.shape[-2:]
        columns = shape[args["column_axis"]]
        rows = math.prod(shape) // columns if columns else 0
        if not spec.numel:
            return None
        return Expected(0.0, abs(args["scale"]) * math.sqrt(min(rows, columns) / spec.numel))
    return None


def _log_uniform(low: float, high: float) -> Expected:
    """log(X) for X uniform on [low, high), 0 <= low < high: moments from the antiderivatives
    of log x and (log x)**2 (x log x - x, and x ((log x)**2 - 2 log x + 2))."""

    def first(x: float) -> float:
        return x * math.log(x) - x if x > 0 else 0.0

    def second(x: float) -> float:
        return x * (math.log(x) ** 2 - 2 * math.log(x) + 2) if x > 0 else 0.0

    width = high - low
    mean = (first(high) - first(low)) / width
    variance = max((second(high) - second(low)) / width - mean * mean, 0.0)
    low_value = math.log(low) if low > 0 else -math.inf
    # log of a uniform from 0 is minus an exponential: kurtosis 9 (less when low > 0).
    return Expected(mean, math.sqrt(variance), 9.0, low_value, math.log(high))


def _transformed(spec: TensorSpec) -> Expected | None:
    if spec.transform.name != "log":
        return None
    offset = float(dict(spec.transform.params).get("offset", 0.0))
    args = spec.init.family_args(spec.params)
    if spec.init.family == "constant":
        value = math.log(args["value"] + offset) if args["value"] + offset > 0 else -math.inf
        return Expected(value, 0.0, value=value, low=value, high=value)
    if spec.init.family == "uniform" and args["scale"] > 0:
        return _log_uniform(offset, offset + float(args["scale"]))
    return None


def _rounded(value: float, dtype: np.dtype | None) -> float:
    """``value`` as stored in ``dtype`` (round to nearest), back as a float."""
    if dtype is None or not math.isfinite(value):
        return value
    return float(np.asarray(value, dtype=np.float64).astype(dtype))


def with_zero_rows(want: Expected, spec: TensorSpec) -> Expected:
    """The moments once ``spec.zero_rows`` are set to zero (a mixture with a point at 0)."""
    if not spec.zero_rows or not spec.shape or not spec.shape[0]:
        return want
    kept = 1 - len(spec.zero_rows) / spec.shape[0]
    second = kept * (want.std**2 + want.mean**2)
    mean = kept * want.mean
    std = math.sqrt(max(second - mean * mean, 0.0))
    low = None if want.low is None else min(want.low, 0.0)
    high = None if want.high is None else max(want.high, 0.0)
    value = want.value if want.value == 0.0 else None
    return Expected(mean, std, want.kurtosis / max(kept, 1e-12), low, high, value)


def check(
    want: Expected,
    count: int,
    mean: float,
    std: float,
    low: float,
    high: float,
    dtype: np.dtype | None = None,
) -> str:
    """'' when the measured statistics fit ``want`` within sampling error; else why not.
    ``dtype``: the stored dtype, to which a bound rounds too (a bfloat16 tensor cut at 0.06
    may hold 0.0600586, the nearest bfloat16)."""
    if count == 0:
        return ""
    if want.value is not None:
        stored = {want.value, _rounded(want.value, dtype)}  # 0.1 is 0.100000001 in float32
        if low == high and high in stored:
            return ""
        return f"expected every value {want.value:.9g}, found {low:.9g}..{high:.9g}"
    span = abs(want.high - want.low) if want.high is not None and want.low is not None else 0.0
    slack = 1e-6 * max(span, want.std, 1e-30)  # float arithmetic near the bound
    if want.low is not None and low < min(want.low, _rounded(want.low, dtype)) - slack:
        return f"min {low:.6g} is below the rule's bound {want.low:.6g}"
    if want.high is not None and high > max(want.high, _rounded(want.high, dtype)) + slack:
        return f"max {high:.6g} is above the rule's bound {want.high:.6g}"
    if count < 2:
        return ""
    # Standard errors: of the mean, sigma / sqrt(n); of the std, sigma sqrt((k - 1) / 4n).
    mean_error = want.std / math.sqrt(count)
    std_error = want.std * math.sqrt(max(want.kurtosis - 1, 0.0) / (4 * count))
    # bfloat16 keeps 8 bits: rounding moves a std by up to ~0.4% on small tensors.
    if abs(mean - want.mean) > SIGMAS * mean_error + 1e-3 * want.std:
        return f"mean {mean:.6g}, expected {want.mean:.6g} (±{SIGMAS * mean_error:.2g})"
    if abs(std - want.std) > SIGMAS * std_error + 4e-3 * want.std:
        return f"std {std:.6g}, expected {want.std:.6g} (±{SIGMAS * std_error:.2g})"
    return ""
