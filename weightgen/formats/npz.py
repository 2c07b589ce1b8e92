"""npz: a zip (zip64, stored) of ``.npy`` members, each written header first, then chunk by chunk.

numpy has no bfloat16 or float8: such tensors are stored bit-exact as uint16/uint8, and the
member ``__weightgen__.json`` records their logical dtypes ({"dtypes": {name: "bfloat16"}}),
which ``weightgen inspect`` and ``weightgen.load`` restore. ``numpy.load`` reads every member
(the JSON one as raw bytes); ``arr.view(ml_dtypes.bfloat16)`` restores one by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy

from ..dtypes import DTYPES, from_numpy
from ..errors import FileFormatError
from .base import READ_CHUNK_BYTES, TensorEntry, as_bytes

META_MEMBER = "__weightgen__.json"
# What zipfile and zlib raise on damaged archives (a CRC mismatch is a BadZipFile).
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    KeyError,
    struct.error,
    OverflowError,
)
# A fixed timestamp: the same tensors give the same file, byte for byte (replays compare).
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _member(name: str) -> str:
    return name + ".npy"


def _info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


class Sink:
    def __init__(self, file: BinaryIO, entries: Sequence[TensorEntry], metadata: Mapping[str, str]):
        self._zip = zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._entries = list(entries)
        self._metadata = dict(metadata)
        self._index = -1
        self._member = None
        self._written = 0

    def _open(self, index: int) -> None:
        """Close the current member and open every member up to ``index`` (empty ones too)."""
        while self._index < index:
            self._close_member()
            self._index += 1
            entry = self._entries[self._index]
            self._member = self._zip.open(_info(_member(entry.name)), "w", force_zip64=True)
            header = {
                "descr": npy.dtype_to_descr(entry.dtype.storage),
                "fortran_order": False,
                "shape": entry.shape,
            }
            npy.write_array_header_1_0(self._member, header)

    def _close_member(self) -> None:
        if self._member is None:
            return
        expected = self._entries[self._index].nbytes
        if self._written != expected:
            raise AssertionError(f"wrote {self._written} of {expected} bytes")
        self._member.close()
        self._member = None
        self._written = 0

    def write(self, index: int, offset: int, chunk: np.ndarray) -> None:
        if index != self._index:
            self._open(index)
        if offset * self._entries[index].dtype.itemsize != self._written:
            raise AssertionError(f"tensor {self._entries[index].name!r}: out-of-order chunk")
        self._member.write(as_bytes(chunk))
        self._written += chunk.nbytes

    def close(self) -> None:
        self._open(len(self._entries) - 1)
        self._close_member()
        logical = {e.name: e.dtype.name for e in self._entries if not e.dtype.numpy_native}
        meta = {**self._metadata, "dtypes": logical}
        self._zip.writestr(_info(META_MEMBER), json.dumps(meta, sort_keys=True))
        self._zip.close()

    def abort(self) -> None:
        # The zip is being thrown away; release its handles now (the temporary file is
        # still open), so that nothing tries to finish it later, when it is gone.
        if self._member is not None:
            with contextlib.suppress(Exception):
                self._member.close()
        with contextlib.suppress(Exception):
            self._zip.close()


class Reader:
    def __init__(self, path: str | os.PathLike):
        try:
            self._zip = zipfile.ZipFile(path)
        except _ZIP_ERRORS as exc:
            raise FileFormatError(f"not a readable npz file ({exc})") from None
        try:
            self.metadata = self._read_metadata()
            logical = self.metadata.get("dtypes", {})
            self.entries: list[TensorEntry] = []
            self._data: dict[str, tuple[zipfile.ZipInfo, int, bool]] = {}
            for info in self._zip.infolist():
                if info.filename == META_MEMBER or not info.filename.endswith(".npy"):
                    continue
                name = info.filename[: -len(".npy")]
                if name in self._data:
                    raise FileFormatError(f"member {info.filename!r} appears twice")
                entry, offset, fortran = self._read_npy_header(info, name, logical.get(name))
                self.entries.append(entry)
                self._data[name] = (info, offset, fortran)
        except _ZIP_ERRORS as exc:
            self._zip.close()
            raise FileFormatError(f"damaged npz file ({exc})") from None
        except BaseException:
            self._zip.close()
            raise

    def _read_metadata(self) -> dict:
        try:
            raw = self._zip.read(META_MEMBER)
        except KeyError:
            return {}
        try:
            meta = json.loads(raw)
        except ValueError:
            raise FileFormatError(f"{META_MEMBER} is not valid JSON") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("dtypes", {}), dict):
            raise FileFormatError(f"{META_MEMBER} is malformed")
        return meta

    def _read_npy_header(self, info, name, logical_name):
        with self._zip.open(info) as member:
            try:
                version = npy.read_magic(member)
                if version == (1, 0):
                    shape, fortran, dtype = npy.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, fortran, dtype = npy.read_array_header_2_0(member)
                else:
                    raise ValueError(f"unsupported .npy version {version}")
            except ValueError as exc:
                raise FileFormatError(f"member {info.filename!r}: {exc}") from None
            offset = member.tell()
        if logical_name is not None:
            dt = DTYPES.get(logical_name)
            if dt is None or dt.storage != dtype:
                raise FileFormatError(
                    f"tensor {name!r}: recorded dtype {logical_name!r} does not match {dtype}"
                )
        else:
            dt = from_numpy(dtype)
            if dt is None:
                raise FileFormatError(f"tensor {name!r}: unsupported dtype {dtype}")
        entry = TensorEntry(name, tuple(shape), dt)
        if info.file_size - offset != entry.nbytes:
            raise FileFormatError(
                f"tensor {name!r}: {info.file_size - offset} data bytes, expected {entry.nbytes}"
            )
        return entry, offset, fortran

    def order(self, entry: TensorEntry) -> str:
        return "F" if self._data[entry.name][2] else "C"

    def iter_chunks(
        self, entry: TensorEntry, chunk_bytes: int = READ_CHUNK_BYTES
    ) -> Iterator[np.ndarray]:
        info, offset, _ = self._data[entry.name]
        itemsize = entry.dtype.itemsize
        step = max(itemsize, chunk_bytes // itemsize * itemsize)
        try:
            with self._zip.open(info) as member:
                member.read(offset)
                remaining = entry.nbytes
                while remaining:
                    data = member.read(min(step, remaining))
                    if not data or len(data) % itemsize:
                        raise FileFormatError(f"tensor {entry.name!r}: member ends early")
                    remaining -= len(data)
                    yield np.frombuffer(data, dtype=entry.dtype.storage).view(entry.dtype.numpy)
        except _ZIP_ERRORS as exc:
            raise FileFormatError(f"tensor {entry.name!r}: damaged data ({exc})") from None

    def spans(self) -> list[tuple[str, int, int]]:
        """(tensor, file offset, bytes) of every tensor's data, in file order; only members
        stored uncompressed have their data as such in the file."""
        spans = []
        for entry in self.entries:
            info, offset, fortran = self._data[entry.name]
            if info.compress_type != zipfile.ZIP_STORED or fortran:
                raise FileFormatError(f"tensor {entry.name!r} is not stored as raw bytes")
            fp = self._zip.fp
            fp.seek(info.header_offset)
            local = fp.read(zipfile.sizeFileHeader)
            if len(local) != zipfile.sizeFileHeader:
                raise FileFormatError(f"member {info.filename!r}: truncated local header")
            # The local header: 30 bytes, then the name and the extra field (their lengths
            # are its last two fields); the member's data follows.
            name_length, extra_length = struct.unpack(zipfile.structFileHeader, local)[-2:]
            start = info.header_offset + zipfile.sizeFileHeader + name_length + extra_length
            spans.append((entry.name, start + offset, entry.nbytes))
        return sorted(spans, key=lambda span: span[1])

    def close(self) -> None:
        self._zip.close()
