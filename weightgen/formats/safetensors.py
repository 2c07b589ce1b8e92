"""safetensors, written by weightgen itself so a file of any size streams out in bounded memory.

Layout (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N,
N bytes of JSON (``{"__metadata__": {...}, name: {"dtype", "shape", "data_offsets"}}``,
padded with spaces to a multiple of 8), then the tensors' bytes back to back. The header
depends only on names, shapes and dtypes, so it is written first and the data streams after.
The library's own ``save_file`` needs every tensor in memory at once, hence this module.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import BinaryIO

import numpy as np

from .. import strictjson
from ..dtypes import from_safetensors_code
from ..errors import FileFormatError, UsageError
from ..writes import PositionalWriter, pwrite_all
from .base import READ_CHUNK_BYTES, TensorEntry, as_bytes

MAX_HEADER_BYTES = 100_000_000  # the reference reader's limit


def check_layout(entries: Sequence[TensorEntry]) -> None:
    for e in entries:
        if e.dtype.safetensors is None:
            raise UsageError(
                f"safetensors has no {e.dtype.name} type (tensor {e.name!r}); "
                "use --format npz or --format hdf5"
            )


def build_header(entries: Sequence[TensorEntry], metadata: Mapping[str, str]) -> bytes:
    """The length prefix and JSON header for ``entries``, laid out in the given order."""
    check_layout(entries)
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for e in entries:
        header[e.name] = {
            "dtype": e.dtype.safetensors,
            "shape": list(e.shape),
            "data_offsets": [offset, offset + e.nbytes],
        }
        offset += e.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keeps the data 8-byte aligned, as the reference does
    return struct.pack("<Q", len(text)) + text


def spans(entries: Sequence[TensorEntry], header_bytes: int) -> list[tuple[str, int, int]]:
    """(tensor, file offset, bytes) of each tensor in a file weightgen laid out with a
    header of ``header_bytes``: what ``Reader.spans`` reads back, known without reading."""
    offsets = data_offsets(entries, header_bytes)
    return [(e.name, offset, e.nbytes) for e, offset in zip(entries, offsets)]


def data_offsets(entries: Sequence[TensorEntry], header_bytes: int) -> list[int]:
    """Each tensor's absolute file offset, for a header of ``header_bytes`` (prefix included)."""
    offsets, position = [], header_bytes
    for e in entries:
        offsets.append(position)
        position += e.nbytes
    return offsets


class Sink:
    """Header first, then each tensor's bytes, in layout order: for streams (stdout)."""

    def __init__(self, file: BinaryIO, entries: Sequence[TensorEntry], metadata: Mapping[str, str]):
        self._file = file
        self._entries = list(entries)
        self._index = 0
        self._written = 0
        file.write(build_header(self._entries, metadata))

    def write(self, index: int, offset: int, chunk: np.ndarray) -> None:
        if index != self._index:
            self._finish_until(index)
        if offset * self._entries[index].dtype.itemsize != self._written:
            raise AssertionError(f"tensor {self._entries[index].name!r}: out-of-order chunk")
        self._file.write(as_bytes(chunk))
        self._written += chunk.nbytes

    def _finish_until(self, index: int) -> None:
        while self._index < index:
            expected = self._entries[self._index].nbytes
            if self._written != expected:
                raise AssertionError(
                    f"tensor {self._entries[self._index].name!r}: wrote {self._written} "
                    f"of {expected} bytes"
                )
            self._index += 1
            self._written = 0

    def close(self) -> None:
        self._finish_until(len(self._entries))
        self._file.flush()

    def abort(self) -> None:
        pass


class PositionalSink:
    """A safetensors file written at offsets: chunks in any order, from any number of writers,
    each with its own descriptor (atomic.PositionalWriter: O_DIRECT where it can). ``create``
    lays out the file (header, full size); the other writers of a shared file open it with
    ``create=False``. ``path`` lets the writer open the file for direct I/O too."""

    def __init__(
        self,
        fd: int,
        entries: Sequence[TensorEntry],
        metadata: Mapping[str, str],
        *,
        create: bool = True,
        path: str | os.PathLike | None = None,
        header: bytes | None = None,
    ):
        self._entries = list(entries)
        if header is None:  # the caller may have built it already (``build_header``)
            header = build_header(self._entries, metadata)
        self._offsets = data_offsets(self._entries, len(header))
        self.size = len(header) + sum(e.nbytes for e in self._entries)
        if create:
            pwrite_all(fd, header, 0)
            os.ftruncate(fd, self.size)
        self._writer = PositionalWriter(fd, path)

    def write(self, index: int, offset: int, chunk: np.ndarray) -> None:
        entry = self._entries[index]
        position = self._offsets[index] + offset * entry.dtype.itemsize
        if offset < 0 or offset * entry.dtype.itemsize + chunk.nbytes > entry.nbytes:
            raise AssertionError(f"tensor {entry.name!r}: chunk outside its data")
        self._writer.write(position, as_bytes(chunk))

    def pause(self) -> None:
        """Writes move on to another file for now (see PositionalWriter.pause)."""
        self._writer.pause()

    def close(self) -> None:
        self._writer.close()

    def abort(self) -> None:
        self._writer.abort()


def parse_header(raw: bytes, data_size: int) -> tuple[list[TensorEntry], list[int], dict]:
    """Validate a header as strictly as the reference reader; entries in data order.

    Returns (entries, data offsets, metadata). ``data_size`` is the file size minus the
    header: the tensors must tile it exactly, from 0, with no gap, overlap or trailing byte.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FileFormatError("safetensors header is not valid UTF-8") from None
    header = strictjson.loads(text, error=FileFormatError, what="safetensors header")
    if not isinstance(header, dict):
        raise FileFormatError("safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise FileFormatError("safetensors __metadata__ must map strings to strings")
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise FileFormatError(f"tensor {name!r}: expected dtype, shape and data_offsets")
        dtype = from_safetensors_code(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dtype is None:
            raise FileFormatError(f"tensor {name!r}: unsupported dtype {info['dtype']!r}")
        shape, offsets = info["shape"], info["data_offsets"]
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**63 for d in shape
        ):
            raise FileFormatError(f"tensor {name!r}: shape must be a list of non-negative ints")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise FileFormatError(f"tensor {name!r}: data_offsets must be [begin, end]")
        entry = TensorEntry(name, tuple(shape), dtype)
        nbytes = math.prod(shape) * dtype.itemsize  # exact: Python ints cannot overflow
        if nbytes != offsets[1] - offsets[0]:
            raise FileFormatError(
                f"tensor {name!r}: shape {shape} of {dtype.name} needs {nbytes} bytes, "
                f"its data_offsets span {offsets[1] - offsets[0]}"
            )
        spans.append((offsets[0], offsets[1], entry))
    spans.sort(key=lambda s: (s[0], s[1]))
    position = 0
    for begin, end, entry in spans:
        if begin != position:
            kind = "overlaps the previous tensor" if begin < position else "leaves a gap"
            raise FileFormatError(f"tensor {entry.name!r}: data {kind} (offset {begin})")
        position = end
    if position != data_size:
        raise FileFormatError(
            f"safetensors data is {data_size} bytes but the tensors cover {position}"
            + (" (file truncated)" if position > data_size else " (trailing bytes)")
        )
    return [s[2] for s in spans], [s[0] for s in spans], metadata


class Reader:
    def __init__(self, path: str | os.PathLike):
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        try:
            size = os.fstat(self._file.fileno()).st_size
            prefix = self._file.read(8)
            if len(prefix) < 8:
                raise FileFormatError("file too small to be safetensors (no 8-byte header length)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES:
                raise FileFormatError(
                    f"safetensors header length {header_len} exceeds the 100 MB limit"
                )
            if header_len > size - 8:
                raise FileFormatError(
                    f"safetensors header length {header_len} runs past the end of the file"
                )
            raw = self._file.read(header_len)
            self.entries, offsets, self.metadata = parse_header(raw, size - 8 - header_len)
            self._offsets = {e.name: 8 + header_len + o for e, o in zip(self.entries, offsets)}
            self.size = size
        except BaseException:
            self._file.close()
            raise

    def iter_chunks(
        self, entry: TensorEntry, chunk_bytes: int = READ_CHUNK_BYTES
    ) -> Iterator[np.ndarray]:
        itemsize = entry.dtype.itemsize
        step = max(itemsize, chunk_bytes // itemsize * itemsize)
        self._file.seek(self._offsets[entry.name])
        remaining = entry.nbytes
        while remaining:
            data = self._file.read(min(step, remaining))
            if not data or len(data) % itemsize:
                raise FileFormatError(f"tensor {entry.name!r}: file ends early")
            remaining -= len(data)
            yield np.frombuffer(data, dtype=entry.dtype.numpy)

    def spans(self) -> list[tuple[str, int, int]]:
        """(tensor, file offset, bytes) of every tensor's data, in file order."""
        return [(e.name, self._offsets[e.name], e.nbytes) for e in self.entries]

    def close(self) -> None:
        self._file.close()
