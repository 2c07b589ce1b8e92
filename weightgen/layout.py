"""Where each tensor's bytes lie in the files of an output, and the file digests built on it.

A file is tiled into pieces: each tensor's data (a span the format's reader reports) and the
bytes between them (headers, padding, an index). A piece is hashed in blocks (digest.py),
so a file's digest needs the tensors' digests and a read of the few other bytes only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import digest, formats
from .errors import FileFormatError

WEIGHT_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class Piece:
    offset: int
    nbytes: int
    tensor: str | None  # None: bytes that belong to no tensor


@dataclass(frozen=True)
class FileLayout:
    """One file of an output: its name as recorded, where it is, and its tensors' spans."""

    name: str
    path: Path
    size: int
    spans: tuple[tuple[str, int, int], ...] = ()  # (tensor, offset, bytes), in file order

    def pieces(self) -> list[Piece]:
        """The file cut at every tensor's data boundaries: the non-empty pieces, in order."""
        found, position = [], 0
        for name, offset, nbytes in self.spans:
            if offset < position or offset + nbytes > self.size:
                raise FileFormatError(f"{self.name}: tensor {name!r} lies outside the file")
            if offset > position:
                found.append(Piece(position, offset - position, None))
            if nbytes:
                found.append(Piece(offset, nbytes, name))
            position = offset + nbytes
        if position < self.size:
            found.append(Piece(position, self.size - position, None))
        return found


def of_file(path: str | os.PathLike, name: str | None = None, fmt: str | None = None) -> FileLayout:
    """The layout of a weight file (any format weightgen writes); FileFormatError where its
    tensors are not stored as raw bytes (a compressed npz member, a chunked HDF5 dataset)."""
    path = Path(path)
    reader = formats.module(fmt or formats.sniff(path)).Reader(path)
    try:
        spans = tuple(sorted(reader.spans(), key=lambda span: span[1]))
    finally:
        reader.close()
    return FileLayout(name or path.name, path, os.path.getsize(path), spans)


def of_plain(path: str | os.PathLike, name: str | None = None) -> FileLayout:
    """A file with no tensors in it (an index, a config.json): one piece of other bytes."""
    path = Path(path)
    return FileLayout(name or path.name, path, os.path.getsize(path))


def of_folder(
    folder: str | os.PathLike,
    *,
    skip: tuple[str, ...] = (),
    known: Mapping[str, tuple[tuple[str, int, int], ...]] | None = None,
) -> list[FileLayout]:
    """Every regular file of a checkpoint folder, sorted by name: the ``.safetensors`` files
    with their tensors, the others (index, config.json) as plain bytes. ``known``: the spans
    of files whose layout the caller knows (it wrote them), not read back."""
    layouts = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name in skip or not entry.is_file(follow_symlinks=False):
            continue
        if known is not None and entry.name in known:
            size = entry.stat(follow_symlinks=False).st_size
            layouts.append(FileLayout(entry.name, Path(entry.path), size, known[entry.name]))
        elif entry.name.endswith(WEIGHT_SUFFIX):
            layouts.append(of_file(entry.path, fmt="safetensors"))
        else:
            layouts.append(of_plain(entry.path))
    return layouts


def read_blocks(
    fd: int, piece: Piece, block_bytes: int = digest.BLOCK_BYTES
) -> Iterator[memoryview]:
    """A piece's bytes, block by block (the last one may be short)."""
    for start in range(piece.offset, piece.offset + piece.nbytes, block_bytes):
        size = min(block_bytes, piece.offset + piece.nbytes - start)
        data = os.pread(fd, size, start)
        if len(data) != size:
            raise FileFormatError(f"file ends at byte {start + len(data)}, inside its data")
        yield memoryview(data)


def file_digest(
    layout: FileLayout,
    tensor_digests: Mapping[str, bytes],
    block_bytes: int = digest.BLOCK_BYTES,
) -> bytes:
    """The file's digest from its tensors' digests, reading only the bytes between them."""
    parts = []
    with open(layout.path, "rb") as f:
        for piece in layout.pieces():
            if piece.tensor is not None:
                parts.append(tensor_digests[piece.tensor])
            else:
                blocks = read_blocks(f.fileno(), piece, block_bytes)
                parts.append(digest.compose(digest.block_digest(b) for b in blocks))
    return digest.file_digest(parts)
