"""What torch's init calls mean as jax initializers: pure Python, no torch.

transformers_layout.py records every write ``_init_weights`` makes to a tensor (where, and
which call); this module says what each call leaves in the tensor (a spec entry, or a
problem: why no jax initializer draws it) and folds a tensor's writes, the last one
deciding: whole rows of zeros after another init are ``zero_rows``, any other partial write
is a problem. Kept apart so that these rules are tested without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .recipe import INVISIBLE_CUT

ZEROS: dict = {"init": "zeros"}
ONES: dict = {"init": "ones"}
EMPTY = "nothing (torch.empty made it and no init call writes it)"
NOTHING = "nothing (no write to it was seen)"
COMPUTED = "values the model computed on the CPU (no init call rewrites them)"


@dataclass(frozen=True)
class Write:
    """A write to a storage: where (the view's offset, shape and strides, in elements) and
    what (an effect: a spec entry, a problem string, a ``Shifted`` uniform or a ``Map``)."""

    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    effect: Any
    call: str


@dataclass(frozen=True)
class Shifted:
    """``uniform_(a, b)`` with a != 0: ``a + uniform(b - a)``, which no jax initializer
    draws, but whose log a spec transform expresses (``log(x + a)``)."""

    entry: dict
    offset: float
    problem: str


@dataclass(frozen=True)
class Map:
    """An elementwise map applied to what a tensor holds (``log_()``, ``torch.log``)."""

    name: str
    call: str


# --- what each call leaves ------------------------------------------------------------------


def constant(value: Any) -> dict | str:
    try:
        value = float(value)
    except (TypeError, ValueError, RuntimeError):
        return f"fills it with {value!r}"
    if not math.isfinite(value):
        return f"fills it with {value}"
    if value == 0:
        return dict(ZEROS)
    if value == 1:
        return dict(ONES)
    return {"init": "constant", "value": value}


def normal(mean: Any, std: Any) -> dict | str:
    mean, std = float(mean), float(std)
    if mean != 0:
        return f"normal_(mean={mean}, std={std}) (weightgen's normal has mean 0)"
    return {"init": "normal", "stddev": std}


# torch's fan axes (torch.nn.init._calculate_fan_in_and_fan_out): in = dim 1, out = dim 0,
# both times the receptive field (the product of dims 2 and up), as JAX's _compute_fans takes
# them with in_axis=1, out_axis=0 (for a matrix, the torch Linear layout [out, in]).
TORCH_FANS = {"in_axis": 1, "out_axis": 0}


def uniform(a: Any, b: Any, shape: tuple[int, ...] | None = None) -> dict | Shifted:
    """``uniform_(a, b)``: ``uniform(scale=b)`` where a = 0; on a tensor of ``shape`` with 2
    or more dimensions, a symmetric ``uniform_(-b, b)`` is JAX's variance scaling with a
    uniform distribution (which draws from [-limit, limit), limit = sqrt(3 scale / fan_in)):
    scale = b² fan_in / 3."""
    a, b = float(a), float(b)
    if a == 0:
        return {"init": "uniform", "scale": b}
    problem = (
        f"uniform_(a={a}, b={b}) (JAX's uniform draws from [0, scale), and its variance "
        "scaling from [-limit, limit) on tensors of 2 or more dimensions only)"
    )
    if a == -b and b > 0 and shape is not None and len(shape) >= 2 and math.prod(shape):
        fan_in = shape[1] * math.prod(shape[2:])
        return variance_scaling(b * b * fan_in / 3, "fan_in")
    return Shifted({"init": "uniform", "scale": b - a}, a, problem)


def variance_scaling(scale: float, mode: str) -> dict:
    """A uniform variance scaling with torch's fans: kaiming_uniform_ is scale gain² with its
    mode, xavier_uniform_ scale gain² with fan_avg (torch's bound sqrt(3) gain / sqrt(fan) is
    JAX's limit sqrt(3 scale / fan))."""
    return {
        "init": "variance-scaling",
        "scale": scale,
        "mode": mode,
        "distribution": "uniform",
        **TORCH_FANS,
    }


def trunc_normal(mean: Any, std: Any, a: Any, b: Any) -> dict | str:
    """torch's bounds are absolute, JAX's in units of the std; a cut beyond 5 stds on both
    sides (torch's default ±2 at std 0.02 is ±100) is no cut, and a plain normal, as the
    recipes write it (recipe.INVISIBLE_CUT: JAX's float32 truncated normal cannot express
    it)."""
    mean, std, a, b = float(mean), float(std), float(a), float(b)
    call = f"trunc_normal_(mean={mean}, std={std}, a={a}, b={b})"
    if mean != 0 or std <= 0 or a >= b:
        return f"{call} (only mean 0, a positive std and a < b map)"
    lower, upper = a / std, b / std
    if min(-lower, upper) >= INVISIBLE_CUT:
        return {"init": "normal", "stddev": std}
    return {"init": "truncated-normal", "stddev": std, "lower": lower, "upper": upper}


def orthogonal(gain: Any, ndim: int) -> dict | str:
    """torch's orthogonal_ flattens the tensor to [shape[0], rest] and takes a Haar-random
    matrix with orthonormal rows (or columns); JAX's orthogonal with column_axis=0 draws the
    transpose of such a matrix, which has the same distribution."""
    if ndim < 2:
        return f"orthogonal_(gain={gain}) on a tensor of fewer than 2 dimensions"
    return {"init": "orthogonal", "scale": float(gain), "column_axis": 0}


# --- a tensor's writes, folded ------------------------------------------------------------


def mapped(effect: Any, rows: set[int], m: Map) -> dict | str:
    """``log`` of uniform values: the spec transform ``{"name": "log", "offset": a}`` on
    ``uniform(b - a)`` (qwen3_next's A_log: ``uniform_(0.01, 16).log_()``)."""
    if isinstance(effect, Shifted):
        base, offset = effect.entry, effect.offset
    elif isinstance(effect, dict) and effect.get("init") == "uniform" and "transform" not in effect:
        base, offset = effect, 0.0
    else:
        return f"{m.call} of {_describe(effect)}"
    if rows or offset < 0:
        return f"{m.call} of values below zero"
    return {**base, "transform": {"name": m.name, "offset": offset}}


def _describe(effect: Any) -> str:
    if isinstance(effect, dict):
        return ", ".join(f"{k}={v}" for k, v in effect.items())
    if isinstance(effect, Shifted):
        return effect.problem
    return str(effect)


def finish(effect: Any, rows: set[int]) -> tuple[dict | None, str | None]:
    """(the spec entry, zero_rows included; None) or (None, the problem)."""
    if effect is None:
        return None, NOTHING
    if isinstance(effect, Shifted):
        return None, effect.problem
    if isinstance(effect, Map):
        return None, f"{effect.call} in place"
    if isinstance(effect, str):
        return None, effect
    entry = dict(effect)
    if rows:
        entry["zero_rows"] = sorted(rows)
    return entry, None


def fold(
    writes: list[Write], offset: int, shape: tuple[int, ...], contiguous: bool = True
) -> tuple[Any, set[int]]:
    """What a tensor (at ``offset`` in its storage, of ``shape``) holds after ``writes`` to
    that storage, the last one deciding: (effect, zero rows)."""
    numel = math.prod(shape)
    row = numel // shape[0] if shape and shape[0] else 0
    effect: Any = None
    rows: set[int] = set()
    for w in writes:
        size = math.prod(w.shape)
        if size == 0:
            continue
        span = 1 + sum((n - 1) * abs(s) for n, s in zip(w.shape, w.stride) if n > 1)
        dense = span == size and all(s != 0 for n, s in zip(w.shape, w.stride) if n > 1)
        if w.offset + span <= offset or w.offset >= offset + numel:
            continue  # another tensor in the same storage
        if dense and w.offset == offset and size == numel:
            is_map = isinstance(w.effect, Map)
            effect = mapped(effect, rows, w.effect) if is_map else w.effect
            rows = set()
            continue
        first = w.offset - offset
        if contiguous and dense and row and first >= 0 and first % row == 0 and size % row == 0:
            span_rows = range(first // row, (first + size) // row)
            if w.effect == ZEROS:
                if isinstance(effect, dict) and effect != ZEROS:
                    rows.update(span_rows)
                continue
            where = f"rows {span_rows.start}..{span_rows.stop - 1}"
        else:
            where = "part of the tensor"
        effect = f"{w.call} on {where} only (only whole rows of zeros can follow another init)"
    return effect, rows
