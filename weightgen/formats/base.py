"""What every format module offers, and the helpers they share.

Each format (safetensors, npz, hdf5) has a streaming ``Sink``, opened with the file's layout,
fed flat chunks with ``write(index, offset, chunk)``, then ``close()``d (the caller commits
the file atomically, or removes it); and a ``Reader`` that lists tensors, streams their data
in chunks and tells where each tensor's bytes lie (``spans``, for digests and verify). The
engine never knows which format it feeds.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..dtypes import DType

# The metadata key/attribute/member under which npz and HDF5 record the logical dtype of
# tensors stored as raw unsigned integers (bfloat16, float8).
DTYPE_ATTR = "weightgen_dtype"
READ_CHUNK_BYTES = 16 << 20


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a file's layout: name, shape, logical dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: DType

    # Computed once (cached_property writes past the frozen dataclass): a plan or a file of
    # 70,000 tensors asks for its sizes often.
    @functools.cached_property
    def numel(self) -> int:
        return math.prod(self.shape)

    @functools.cached_property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class Sink(Protocol):
    def write(self, index: int, offset: int, chunk: np.ndarray) -> None:
        """Write a flat chunk of tensor ``index`` starting at element ``offset``. Stream
        sinks (npz, HDF5, stdout) take tensors and chunks in layout order; positional ones
        (safetensors files) take them in any order."""

    def close(self) -> None:
        """Finish the file (any tensor not yet written must be empty). Raises on failure."""

    def abort(self) -> None:
        """Release resources after a failure; never raises."""


class Reader(Protocol):
    entries: Sequence[TensorEntry]
    metadata: dict

    def iter_chunks(self, entry: TensorEntry, chunk_bytes: int = ...) -> Iterator[np.ndarray]:
        """The flattened tensor in its logical dtype, in chunks of about ``chunk_bytes``."""

    def spans(self) -> list[tuple[str, int, int]]:
        """(tensor, file offset, bytes) of each tensor's data as raw bytes in the file, in
        file order (FileFormatError where a tensor's bytes are not stored as such)."""

    def close(self) -> None: ...


def as_bytes(chunk: np.ndarray) -> memoryview:
    """A contiguous chunk's raw bytes (works for bfloat16/float8 too, unlike memoryview)."""
    return memoryview(np.ascontiguousarray(chunk).reshape(-1).view(np.uint8))


def flat_boxes(
    shape: Sequence[int], start: int, stop: int
) -> Iterator[tuple[tuple[slice, ...], int, int]]:
    """Split the row-major flat range [start, stop) of ``shape`` into rectangular boxes.

    Yields ``(index, box_start, box_stop)``: writing ``flat[box_start:box_stop]`` reshaped to
    the box's shape at ``array[index]`` covers the range exactly. At most 2 * ndim boxes.
    """
    if start >= stop:
        return
    if not shape:
        yield (), start, stop
        return
    inner = math.prod(shape[1:])
    if inner == 0:
        return
    first, first_off = divmod(start, inner)
    last, last_off = divmod(stop, inner)
    if first == last:  # inside one row along axis 0: recurse into it
        for index, a, b in flat_boxes(shape[1:], first_off, last_off):
            yield (slice(first, first + 1), *index), first * inner + a, first * inner + b
        return
    if first_off:  # the partial first row
        for index, a, b in flat_boxes(shape[1:], first_off, inner):
            yield (slice(first, first + 1), *index), first * inner + a, first * inner + b
        first += 1
    if last > first:  # whole rows
        yield (slice(first, last),), first * inner, last * inner
    if last_off:  # the partial last row
        for index, a, b in flat_boxes(shape[1:], 0, last_off):
            yield (slice(last, last + 1), *index), last * inner + a, last * inner + b


def box_shape(shape: Sequence[int], index: tuple[slice, ...]) -> tuple[int, ...]:
    return tuple(s.stop - s.start for s in index) + tuple(shape[len(index) :])
