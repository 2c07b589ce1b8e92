"""Checkpoint folders in the Hugging Face layout: ``model.safetensors`` alone, or
``model-00001-of-0000N.safetensors`` files and ``model.safetensors.index.json``
(``{"metadata": {"total_size": N}, "weight_map": {tensor: file}}``).

Tensors go to shards in file order, a new shard starting when the next tensor would push the
current one past the size limit (a tensor larger than the limit gets a shard of its own), as
``transformers``' ``save_pretrained`` does.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import strictjson
from ..errors import FileFormatError, UsageError
from . import safetensors
from .base import READ_CHUNK_BYTES, TensorEntry

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"  # a checkpoint folder whose weights fit in one file
MAX_INDEX_BYTES = 64 << 20

_UNITS = {
    "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}  # fmt: skip


def parse_size(text: str) -> int:
    """``5GB`` -> 5 * 10**9, ``512MiB`` -> 512 * 2**20, ``1000`` -> 1000 bytes."""
    value = str(text).strip().upper().replace(" ", "")
    number = value.rstrip("KMGTIB")
    unit = value[len(number) :] or "B"
    try:
        size = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise UsageError(
            f"--max-shard-size {text}: expected a size such as 5GB, 500MB or 2GiB"
        ) from None
    if not size >= 1:
        raise UsageError(f"--max-shard-size {text}: must be at least one byte")
    return int(size)


def assign_shards(entries: Sequence[TensorEntry], max_bytes: int) -> list[list[int]]:
    """Indices of ``entries`` per shard, in order."""
    shards: list[list[int]] = [[]]
    size = 0
    for i, entry in enumerate(entries):
        if shards[-1] and size + entry.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(i)
        size += entry.nbytes
    return shards


def shard_name(i: int, count: int) -> str:
    return f"model-{i + 1:05d}-of-{count:05d}.safetensors"


def shard_files(entries: Sequence[TensorEntry], max_bytes: int) -> list[tuple[str, list[int]]]:
    """(file name, entry indices) per weight file: ``model.safetensors`` when everything fits
    in one, else numbered shards, as ``save_pretrained`` names them."""
    shards = assign_shards(entries, max_bytes)
    if len(shards) == 1:
        return [(SINGLE_NAME, shards[0])]
    return [(shard_name(s, len(shards)), members) for s, members in enumerate(shards)]


def index_document(entries: Sequence[TensorEntry], files: list[tuple[str, list[int]]]) -> dict:
    weight_map = {entries[i].name: name for name, members in files for i in members}
    return {
        "metadata": {"total_size": sum(e.nbytes for e in entries)},
        "weight_map": dict(sorted(weight_map.items())),
    }


def index_bytes(entries: Sequence[TensorEntry], files: list[tuple[str, list[int]]]) -> bytes:
    return (json.dumps(index_document(entries, files), indent=2) + "\n").encode("utf-8")


class Sink:
    """The weight files of a checkpoint folder, each written at offsets (``pwrite``).

    ``create`` lays every file out (header, full size) first; writers that share the folder
    with the one that created them open them with ``create=False``.
    """

    def __init__(
        self,
        folder: Path,
        entries: Sequence[TensorEntry],
        metadata: Mapping[str, str],
        files: list[tuple[str, list[int]]],
        *,
        create: bool = True,
        headers: Sequence[bytes] | None = None,
    ):
        """``headers``: each file's safetensors header, when the caller built them already."""
        self._fds: list[int] = []
        self._sinks: list[safetensors.PositionalSink] = []
        self._where: dict[int, tuple[int, int]] = {}  # entry index -> (file, index in file)
        self._last: int | None = None  # the file written last
        flags = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        try:
            for f, (name, members) in enumerate(files):
                path = Path(folder) / name
                fd = os.open(path, flags, 0o666)  # the umask applies
                self._fds.append(fd)
                sink = safetensors.PositionalSink(
                    fd,
                    [entries[i] for i in members],
                    metadata,
                    create=create,
                    path=path,
                    header=headers[f] if headers is not None else None,
                )
                self._sinks.append(sink)
                for position, i in enumerate(members):
                    self._where[i] = (f, position)
        except BaseException:
            self.abort()
            raise

    def write(self, index: int, offset: int, chunk: np.ndarray) -> None:
        f, position = self._where[index]
        if f != self._last and self._last is not None:
            self._sinks[self._last].pause()  # tensors come in file order: done with it
        self._last = f
        self._sinks[f].write(position, offset, chunk)

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()
        self._close_fds()

    def abort(self) -> None:
        for sink in self._sinks:
            sink.abort()
        self._close_fds()

    def _close_fds(self) -> None:
        while self._fds:
            with contextlib.suppress(OSError):
                os.close(self._fds.pop())


def find_index(path: str | os.PathLike) -> Path | None:
    """The index file of a sharded checkpoint given as its folder or its index file."""
    p = Path(path)
    if p.is_dir():
        candidate = p / INDEX_NAME
        if candidate.is_file():
            return candidate
        found = sorted(p.glob("*.safetensors.index.json"))
        return found[0] if len(found) == 1 else None
    if p.name.endswith(".index.json") and p.is_file():
        return p
    return None


def is_checkpoint(path: str | os.PathLike) -> bool:
    """A checkpoint folder (or its index): an index, or a folder with ``model.safetensors``."""
    return find_index(path) is not None or (Path(path) / SINGLE_NAME).is_file()


class Reader:
    """The weight files of a checkpoint folder as one file: entries sorted by name, data
    streamed. The folder has an index and shards, or a single ``model.safetensors``."""

    def __init__(self, path: str | os.PathLike):
        index = find_index(path)
        self._readers: dict[str, safetensors.Reader] = {}
        if index is None:
            if not (Path(path) / SINGLE_NAME).is_file():
                raise FileFormatError(
                    f"{path}: no {INDEX_NAME} or {SINGLE_NAME}: not a checkpoint folder"
                )
            self.folder = Path(path)
            self.metadata = {}
            self.shards = [SINGLE_NAME]
            reader = safetensors.Reader(self.folder / SINGLE_NAME)
            self._readers[SINGLE_NAME] = reader
            self._where = {e.name: SINGLE_NAME for e in reader.entries}
            self.entries = sorted(reader.entries, key=lambda e: e.name)
            return
        self.folder = index.parent
        try:
            with open(index, "rb") as f:
                raw = f.read(MAX_INDEX_BYTES + 1)
            if len(raw) > MAX_INDEX_BYTES:
                raise FileFormatError(f"{index.name} is too large")
            document = strictjson.loads(raw, error=FileFormatError, what=index.name)
        except OSError as exc:
            raise FileFormatError(f"{index.name}: not readable ({exc.strerror})") from None
        weight_map = document.get("weight_map") if isinstance(document, dict) else None
        if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
        ):
            raise FileFormatError(f"{index.name}: weight_map must map tensor names to files")
        files = sorted(set(weight_map.values()))
        for name in files:
            if "/" in name or "\\" in name or name in ("", ".", ".."):
                raise FileFormatError(f"{index.name}: shard {name!r} is not a plain file name")
        metadata = document.get("metadata")
        self.metadata = dict(metadata) if isinstance(metadata, dict) else {}
        self.shards = files
        self._where: dict[str, str] = {}
        entries = []
        try:
            for name in files:
                reader = safetensors.Reader(self.folder / name)
                self._readers[name] = reader
                for entry in reader.entries:
                    if weight_map.get(entry.name) != name:
                        raise FileFormatError(
                            f"tensor {entry.name!r} is in {name} but the index says "
                            f"{weight_map.get(entry.name)!r}"
                        )
                    if entry.name in self._where:
                        raise FileFormatError(f"tensor {entry.name!r} is in two shards")
                    self._where[entry.name] = name
                    entries.append(entry)
        except BaseException:
            self.close()
            raise
        missing = sorted(set(weight_map) - set(self._where))
        if missing:
            raise FileFormatError(f"index lists {missing[0]!r} but no shard holds it")
        self.entries = sorted(entries, key=lambda e: e.name)

    def iter_chunks(
        self, entry: TensorEntry, chunk_bytes: int = READ_CHUNK_BYTES
    ) -> Iterator[np.ndarray]:
        return self._readers[self._where[entry.name]].iter_chunks(entry, chunk_bytes)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
