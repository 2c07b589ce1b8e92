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
    path: str | os.PathLike, manifest: str | os.PathLike | None = None
) -> tuple[str, list[TensorReport], dict]:
    """(format, one report per tensor, the file's metadata). With a manifest (the one given,
    else the folder's own or the one beside the file, if any), each tensor's statistics are
    set beside what its recorded rule implies."""
    rules = _rules(path, manifest)
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


def check_findings(reports: list[TensorReport]) -> list[str]:
    """What ``inspect --check`` fails on, one "name: why" each: every tensor off its
    recorded rule. (Checks that need no manifest, such as a quantized file's scales, join
    here.) Raises when nothing could be checked: a gate that checks nothing would pass."""
    findings = [f"{r.name}: {r.off}" for r in reports if r.off]
    if not any(r.expected is not None for r in reports):
        raise UsageError(
            "--check: no tensor has a recorded rule to check against (no manifest beside or "
            "inside it); give one with --manifest, or drop --check"
        )
    return findings


def _rules(path: str | os.PathLike, manifest: str | os.PathLike | None) -> dict:
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
