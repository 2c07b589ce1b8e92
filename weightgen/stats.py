"""``inspect``: each tensor's layout and summary statistics, in one streaming pass.

Pure numpy (no JAX): statistics are accumulated in float64 chunk by chunk and merged with
Chan et al.'s parallel formula, so a file of any size is read in bounded memory.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from . import expect, formats
from .errors import UsageError, WeightgenError


@dataclass
class TensorReport:
    name: str
    shape: list[int]
    dtype: str
    bytes: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    # From the manifest's rule for this tensor, when there is one: its distribution's
    # moments and bounds (expect.Expected), and why the measured values do not fit it ('' if
    # they do, within sampling error).
    expected: dict | None = None
    off: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class RunningStats:
    """Count, mean, M2, min and max of a stream of chunks, merged chunk by chunk.

    For complex tensors the mean is complex, the std is that of the modulus of the deviation
    (sqrt(E|x - mean|^2)), and min/max, which have no order to follow, stay None.
    """

    def __init__(self, is_complex: bool):
        self.is_complex = is_complex
        self.count = 0
        self.mean: complex | float = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def update(self, chunk: np.ndarray) -> None:
        if chunk.size == 0:
            return
        values = chunk.astype(np.complex128 if self.is_complex else np.float64)
        n = values.size
        mean = values.mean()
        m2 = float(np.sum(np.abs(values - mean) ** 2))
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 += m2 + abs(delta) ** 2 * self.count * n / total
        self.count = total
        if not self.is_complex:
            self.min = min(self.min, float(values.min()))
            self.max = max(self.max, float(values.max()))

    def report(self) -> dict:
        if self.count == 0:
            return {"mean": None, "std": None, "min": None, "max": None}
        mean = complex(self.mean) if self.is_complex else float(self.mean)
        if self.is_complex:
            mean = str(mean)
        return {
            "mean": mean,
            "std": math.sqrt(self.m2 / self.count),
            "min": None if self.is_complex else self.min,
            "max": None if self.is_complex else self.max,
        }


def inspect_file(
    path: str | os.PathLike,
    manifest: str | os.PathLike | None = None,
    *,
    rules: dict | None = None,
) -> tuple[str, list[TensorReport], dict]:
    """(format, one report per tensor, the file's metadata). With a manifest (the one given,
    else the folder's own or the one beside the file, if any), each tensor's statistics are
    set beside what its recorded rule implies. ``rules``: ``rules_for``'s, read already."""
    rules = rules_for(path, manifest) if rules is None else rules
    fmt = formats.sniff(path)
    reader = formats.module(fmt).Reader(path)
    try:
        reports = []
        for entry in reader.entries:
            stats = RunningStats(entry.dtype.is_complex)
            for chunk in reader.iter_chunks(entry):
                stats.update(chunk)
            report = TensorReport(
                entry.name, list(entry.shape), entry.dtype.name, entry.nbytes, **stats.report()
            )
            spec = rules.get(entry.name)
            if spec is not None and spec.quant is not None:
                spec = None  # a quantized weight's part: checked dequantized (quantized())
            want = expect.expected(spec) if spec is not None else None
            if want is not None and not stats.is_complex:
                want = expect.with_zero_rows(want, spec)
                report.expected = want.as_dict()
                report.off = expect.check(
                    want,
                    stats.count,
                    float(stats.mean),
                    report.std or 0.0,
                    stats.min,
                    stats.max,
                    entry.dtype.numpy,
                )
            reports.append(report)
        return fmt, reports, dict(reader.metadata)
    finally:
        reader.close()


def check_findings(reports: list[TensorReport], quantized: list | None = None) -> list[str]:
    """What ``inspect --check`` fails on, one "name: why" each: every tensor off its
    recorded rule, every quantized weight off its rule once dequantized or holding invalid
    scales. Raises when nothing could be checked: a gate that checks nothing would pass."""
    findings = [f"{r.name}: {r.off}" for r in reports if r.off]
    for q in quantized or []:
        if q.invalid_scales:
            findings.append(f"{q.name}: {q.invalid_scales} invalid scales")
        elif q.off:
            findings.append(f"{q.name} (dequantized): {q.off}")
    if not any(r.expected is not None for r in reports) and not quantized:
        raise UsageError(
            "--check: no tensor has a recorded rule to check against (no manifest beside or "
            "inside it); give one with --manifest, or drop --check"
        )
    return findings


def rules_for(path: str | os.PathLike, manifest: str | os.PathLike | None) -> dict:
    """name -> TensorSpec from the manifest that describes ``path``; {} when there is none."""
    from .manifest import locate
    from .specfile import load_spec

    if manifest is None:
        found = locate(path)[1]
        if found is None:
            return {}
        try:  # one found beside the file may be stale or foreign: the statistics still stand
            return {t.name: t for t in load_spec(os.fspath(found)).plan.tensors}
        except WeightgenError:
            return {}
    return {t.name: t for t in load_spec(os.fspath(manifest)).plan.tensors}


@dataclass
class QuantizedReport:
    """A quantized weight, dequantized as its loader does: its statistics beside its rule's,
    and how many of its stored scales are invalid (not finite and positive; E8M0 0xFF)."""

    name: str
    format: str
    shape: list[int]
    stored: list[str]
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    invalid_scales: int
    expected: dict | None = None
    off: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def inspect_quantized(
    path: str | os.PathLike,
    manifest: str | os.PathLike | None = None,
    *,
    rules: dict | None = None,
) -> list[QuantizedReport]:
    """Every quantized weight the manifest records (none without one), dequantized band by
    band (bounded memory: one band and the weight's scales), with its rule's check.
    ``rules``: ``rules_for``'s, read already."""
    rules = rules_for(path, manifest) if rules is None else rules
    weights: dict[str, list] = {}
    for spec in rules.values():
        if spec.quant is not None:
            weights.setdefault(spec.quant.logical.name, []).append(spec)
    if not weights:
        return []
    reader = formats.module(formats.sniff(path)).Reader(path)
    try:
        entries = {e.name: e for e in reader.entries}
        return [_dequantized(reader, entries, parts) for _, parts in sorted(weights.items())]
    finally:
        reader.close()


def _dequantized(reader, entries: dict, parts: list) -> QuantizedReport:
    logical, scheme = parts[0].quant.logical, parts[0].quant.scheme
    missing = [p.name for p in parts if p.name not in entries]
    if missing:
        raise WeightgenError(f"{logical.name}: its stored tensor {missing[0]!r} is not in the file")
    by_suffix = {p.quant.suffix: p for p in parts}
    values_suffix = next(s.suffix for s in scheme.format.parts if s.role == "values")
    small = {}  # every part but the values, whole (scales: at most 1/16 of the values)
    invalid = 0
    roles = {p.suffix: p.role for p in scheme.format.parts}
    for suffix, part in by_suffix.items():
        if suffix == values_suffix or roles[suffix] == "constant":
            continue
        data = np.concatenate(
            [*reader.iter_chunks(entries[part.name]), np.empty(0, part.dtype.numpy)]
        )
        small[suffix] = data
        invalid += _invalid(scheme, suffix, data)
    stats = RunningStats(False)
    shape = logical.shape
    fmt_part = {p.suffix: p for p in scheme.format.parts}
    band_rows = scheme.band_rows()
    per_band = {s: scheme.part_band_elems(fmt_part[s], shape) for s in by_suffix}
    pending: list[np.ndarray] = []
    held = 0
    band = 0

    def flush(count: int) -> None:
        nonlocal band
        data = np.concatenate(pending)
        rows = min(band_rows, shape[0] - band * band_rows)
        band_parts = {values_suffix: data[:count]}
        for suffix, whole in small.items():
            if roles[suffix] == "global":  # one value for the whole weight
                band_parts[suffix] = whole
                continue
            step = per_band[suffix]
            band_parts[suffix] = whole[band * step : band * step + step]
        stats.update(scheme.dequantize(band_parts, (rows, *shape[1:])))
        rest = data[count:]
        pending.clear()
        if rest.size:
            pending.append(rest)
        band += 1

    total = entries[by_suffix[values_suffix].name].numel
    step = per_band[values_suffix]
    done = 0
    for chunk in reader.iter_chunks(entries[by_suffix[values_suffix].name]):
        pending.append(chunk)
        held += chunk.size
        while held >= min(step, total - done) and done < total:
            count = min(step, total - done)
            flush(count)
            held -= count
            done += count
    report = QuantizedReport(
        logical.name,
        scheme.name,
        list(shape),
        [p.name for p in parts],
        invalid_scales=invalid,
        **stats.report(),
    )
    want = expect.expected(logical)
    if want is not None and stats.count:
        want = expect.with_zero_rows(want, logical)
        report.expected = want.as_dict()
        report.off = _quantized_fit(want, stats, scheme.format.std_tolerance)
    if invalid:
        report.off = (report.off + "; " if report.off else "") + f"{invalid} invalid scales"
    return report


def _invalid(scheme, suffix: str, data: np.ndarray) -> int:
    from .quant import invalid_scales

    return invalid_scales(scheme, suffix, data)


def _quantized_fit(want, stats: RunningStats, tolerance: float) -> str:
    """'' when a dequantized weight's mean and std fit its rule within sampling error plus
    the format's quantization error (``tolerance``, relative to the rule's std); else why not.
    Its min and max are not held to the rule's bounds: rounding moves a value by up to half
    a step (a draw of 0.9 may become 0.9375)."""
    if want.value is not None or stats.count < 2:
        return ""
    count, std = stats.count, math.sqrt(stats.m2 / stats.count)
    mean_error = expect.SIGMAS * want.std / math.sqrt(count) + tolerance * want.std
    spread = max(want.kurtosis - 1, 0.0) / (4 * count)
    std_error = expect.SIGMAS * want.std * math.sqrt(spread) + tolerance * want.std
    if abs(float(stats.mean) - want.mean) > mean_error:
        return f"mean {float(stats.mean):.6g}, expected {want.mean:.6g} (±{mean_error:.2g})"
    if abs(std - want.std) > std_error:
        return f"std {std:.6g}, expected {want.std:.6g} (±{std_error:.2g})"
    return ""
