"""Sharded safetensors in the Hugging Face layout: a folder of
``model-00001-of-0000N.safetensors`` files and ``model.safetensors.index.json``
(``{"metadata": {"total_size": N}, "weight_map": {tensor: file}}``).

Tensors go to shards in file order, a new shard starting when the next tensor would push the
current one past the size limit (a tensor larger than the limit gets a shard of its own), as
``transformers``' ``save_pretrained`` does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import FileFormatError, UsageError
from . import safetensors
from .base import READ_CHUNK_BYTES, TensorEntry

INDEX_NAME = "model.safetensors.index.json"
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


def index_document(entries: Sequence[TensorEntry], shards: list[list[int]], metadata) -> dict:
    weight_map = {
        entries[i].name: shard_name(s, len(shards)) for s, members in enumerate(shards)
        for i in members
    }  # fmt: skip
    return {
        "metadata": {"total_size": sum(e.nbytes for e in entries), **dict(metadata)},
        "weight_map": dict(sorted(weight_map.items())),
    }


class Sink:
    """One safetensors sink per shard, opened in turn inside ``folder``."""

    def __init__(
        self,
        folder: Path,
        entries: Sequence[TensorEntry],
        metadata: Mapping[str, str],
        max_bytes: int,
    ):
        self._folder = Path(folder)
        self._entries = list(entries)
        self._metadata = dict(metadata)
        self._shards = assign_shards(self._entries, max_bytes)
        self._shard_of = {i: s for s, members in enumerate(self._shards) for i in members}
        self._current = -1
        self._file = None
        self._sink = None
        self.files: list[str] = [shard_name(s, len(self._shards)) for s in range(len(self._shards))]

    def _open(self, shard: int) -> None:
        while self._current < shard:
            self._close_current()
            self._current += 1
            members = [self._entries[i] for i in self._shards[self._current]]
            path = self._folder / self.files[self._current]
            self._file = open(path, "wb")  # noqa: SIM115 - closed in _close_current
            self._sink = safetensors.Sink(self._file, members, self._metadata)
            self._base = self._shards[self._current][0]

    def _close_current(self) -> None:
        if self._sink is None:
            return
        self._sink.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._sink = self._file = None

    def write(self, index: int, chunk: np.ndarray) -> None:
        shard = self._shard_of[index]
        if shard != self._current:
            self._open(shard)
        self._sink.write(index - self._base, chunk)

    def close(self) -> None:
        self._open(len(self._shards) - 1)
        self._close_current()
        document = index_document(self._entries, self._shards, {})
        with open(self._folder / INDEX_NAME, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()


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


class Reader:
    """All shards of a checkpoint as one file: entries sorted by name, data streamed."""

    def __init__(self, path: str | os.PathLike):
        index = find_index(path)
        if index is None:
            raise FileFormatError(f"{path}: no *.safetensors.index.json found")
        self.folder = index.parent
        try:
            with open(index, "rb") as f:
                raw = f.read(MAX_INDEX_BYTES + 1)
            if len(raw) > MAX_INDEX_BYTES:
                raise FileFormatError(f"{index.name} is too large")
            document = json.loads(raw)
        except (OSError, ValueError, RecursionError) as exc:
            raise FileFormatError(f"{index.name}: not a readable index ({exc})") from None
        weight_map = document.get("weight_map") if isinstance(document, dict) else None
        if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
        ):
            raise FileFormatError(f"{index.name}: weight_map must map tensor names to files")
        files = sorted(set(weight_map.values()))
        for name in files:
            if "/" in name or "\\" in name or name in ("", ".", ".."):
                raise FileFormatError(f"{index.name}: shard {name!r} is not a plain file name")
        self.metadata = dict(document.get("metadata") or {})
        self.shards = files
        self._readers: dict[str, safetensors.Reader] = {}
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
