"""HDF5 through h5py: each dataset created with its final shape, then filled box by box.

A tensor named ``a/b`` becomes dataset ``b`` in group ``a``. h5py has no bfloat16 or float8
(it would store an opaque type): such tensors are stored bit-exact as uint16/uint8 with the
logical dtype in the dataset attribute ``weightgen_dtype``, restored by ``weightgen inspect``
and ``weightgen.load``. HDF5 needs a seekable file, so it cannot stream to stdout.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence

import h5py
import numpy as np

from ..dtypes import DTYPES, from_numpy
from ..errors import FileFormatError
from .base import DTYPE_ATTR, READ_CHUNK_BYTES, TensorEntry, box_shape, flat_boxes

# What h5py raises on damaged files.
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, OverflowError)


class Sink:
    def __init__(
        self, path: str | os.PathLike, entries: Sequence[TensorEntry], metadata: Mapping[str, str]
    ):
        self._file = h5py.File(path, "w")
        self._entries = list(entries)
        self._positions = [0] * len(self._entries)
        self._datasets = []
        for key, value in metadata.items():
            self._file.attrs[key] = value
        for e in self._entries:
            # No timestamps: the same tensors give the same file, byte for byte.
            ds = self._file.create_dataset(
                e.name, shape=e.shape, dtype=e.dtype.storage, track_times=False
            )
            if not e.dtype.numpy_native:
                ds.attrs[DTYPE_ATTR] = e.dtype.name
            self._datasets.append(ds)

    def write(self, index: int, offset: int, chunk: np.ndarray) -> None:
        entry, ds = self._entries[index], self._datasets[index]
        flat = chunk.reshape(-1).view(entry.dtype.storage)
        start = self._positions[index]
        if offset != start:
            raise AssertionError(f"tensor {entry.name!r}: out-of-order chunk")
        for box, a, b in flat_boxes(entry.shape, start, start + flat.size):
            ds[box] = flat[a - start : b - start].reshape(box_shape(entry.shape, box))
        self._positions[index] = start + flat.size

    def close(self) -> None:
        self._file.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._file.close()


class Reader:
    def __init__(self, path: str | os.PathLike):
        try:
            self._file = h5py.File(path, "r")
        except _H5_ERRORS as exc:
            raise FileFormatError(f"not a readable HDF5 file ({exc})") from None
        try:
            self.metadata = {k: str(v) for k, v in self._file.attrs.items()}
            found: list[tuple[str, h5py.Dataset]] = []
            self._file.visititems(
                lambda name, obj: (
                    found.append((name, obj)) if isinstance(obj, h5py.Dataset) else None
                )
            )
            self.entries = []
            self._datasets = {}
            for name, ds in sorted(found):
                logical = ds.attrs.get(DTYPE_ATTR)
                if logical is not None:
                    dt = DTYPES.get(str(logical))
                    if dt is None or dt.storage != ds.dtype:
                        raise FileFormatError(
                            f"tensor {name!r}: recorded dtype {logical!r} does not match {ds.dtype}"
                        )
                else:
                    dt = from_numpy(ds.dtype)
                    if dt is None:
                        raise FileFormatError(f"tensor {name!r}: unsupported dtype {ds.dtype}")
                self.entries.append(TensorEntry(name, tuple(ds.shape), dt))
                self._datasets[name] = ds
        except _H5_ERRORS as exc:
            self._file.close()
            raise FileFormatError(f"damaged HDF5 file ({exc})") from None
        except BaseException:
            self._file.close()
            raise

    def iter_chunks(
        self, entry: TensorEntry, chunk_bytes: int = READ_CHUNK_BYTES
    ) -> Iterator[np.ndarray]:
        ds = self._datasets[entry.name]
        step = max(1, chunk_bytes // entry.dtype.itemsize)
        for start in range(0, entry.numel, step):
            stop = min(entry.numel, start + step)
            try:
                parts = [
                    np.asarray(ds[box]).reshape(-1)
                    for box, _, _ in flat_boxes(entry.shape, start, stop)
                ]
            except _H5_ERRORS as exc:
                raise FileFormatError(f"tensor {entry.name!r}: damaged data ({exc})") from None
            yield np.concatenate(parts).view(entry.dtype.numpy)

    def spans(self) -> list[tuple[str, int, int]]:
        """(tensor, file offset, bytes) of every tensor's data, in file order: weightgen's
        datasets are contiguous, so their bytes lie in the file as they are."""
        spans = []
        for entry in self.entries:
            if entry.nbytes == 0:
                continue
            try:
                offset = self._datasets[entry.name].id.get_offset()
            except _H5_ERRORS:
                offset = None
            if offset is None:
                raise FileFormatError(f"tensor {entry.name!r} is not stored contiguously")
            spans.append((entry.name, offset, entry.nbytes))
        return sorted(spans, key=lambda span: span[1])

    def close(self) -> None:
        self._file.close()
