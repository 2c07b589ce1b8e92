"""Where a run's bytes go: stdout, one file, or a checkpoint folder; and how each commits.

``Target.of`` checks a destination with pure Python before any work (format, kind, free
space, what ``--force`` may replace). ``open`` returns the sink the engine feeds; ``files``
lists the output's files with their digests (read from the temporary output: only the bytes
between tensors are read); ``commit`` makes it appear atomically, or ``abort`` removes it.

A checkpoint folder is what ``save_pretrained`` writes: ``model.safetensors``, or numbered
shards and ``model.safetensors.index.json``; with a Hugging Face config, ``config.json``
too. A folder's manifest lives inside it (``weightgen.manifest.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import digest, formats, layout
from .atomic import AtomicDir, AtomicFile, check_destination, clean_stale, sha256_file
from .errors import UsageError, WeightgenError
from .formats import sharded
from .plan import Plan
from .version import __version__

DEFAULT_SHARD_BYTES = 5 * 10**9  # save_pretrained's default max_shard_size, "5GB"
CONFIG_NAME = "config.json"
FOLDER_FORMAT = "safetensors-sharded"
# Bytes a format adds around the data, per tensor and per file (zip and npy headers, HDF5
# object headers); generous, since the check only guards against a disk that is nearly full.
_OVERHEAD = {"npz": (1024, 4096), "hdf5": (4096, 65536)}


def file_metadata(fmt: str = "safetensors") -> dict[str, str]:
    """What every file records about its maker. transformers 4.x refuses a safetensors file
    whose ``__metadata__`` lacks ``"format": "pt"`` (the tag torch's writer puts there)."""
    tag = {"format": "pt"} if fmt == "safetensors" else {}
    return {**tag, "generator": "weightgen", "weightgen_version": __version__}


def config_bytes(hf_config: Mapping) -> bytes:
    """config.json as save_pretrained lays it out: 2-space indent, then a newline."""
    return (json.dumps(hf_config, indent=2) + "\n").encode("utf-8")


@dataclass
class Target:
    """A validated destination for a plan: its kind, format and layout."""

    path: str
    kind: str  # "stdout", "file" or "folder"
    format: str  # safetensors, npz, hdf5; for folders FOLDER_FORMAT
    plan: Plan
    size: int  # the output's bytes (exact for safetensors)
    shards: list = field(default_factory=list)  # folders: [(file name, entry indices)]
    hf_config: dict | None = None
    # The safetensors header of each weight file (one file, or each shard), built once.
    headers: list = field(default_factory=list)
    entries: list = field(default_factory=list)  # the plan's tensors as a file lists them
    _atomic: AtomicFile | AtomicDir | None = None
    _stream: object = None

    @classmethod
    def of(
        cls,
        plan: Plan,
        output: str | os.PathLike,
        *,
        format: str | None = None,
        max_shard_size: int | None = None,
        hf_config: dict | None = None,
    ) -> Target:
        """The destination's kind, format and layout, checked with pure Python (no file is
        looked at: ``check`` does that)."""
        output = os.fspath(output)
        entries = formats.entries_of(plan.tensors)
        folder = max_shard_size is not None or hf_config is not None
        if folder:
            if format not in (None, "safetensors"):
                raise UsageError(
                    "a checkpoint folder holds safetensors files; drop --format or use "
                    "--format safetensors"
                )
            if output == "-":
                raise UsageError(
                    "a checkpoint folder cannot be written to stdout; give a folder with -o"
                )
            if Path(output).suffix.lower() in formats.SUFFIXES:
                what = (
                    "a Hugging Face model (config.json, weights, manifest)"
                    if hf_config is not None
                    else "--max-shard-size's output"
                )
                folder_name = os.path.join(str(Path(output).with_suffix("")), "")
                raise UsageError(
                    f"-o {output} names a .safetensors file, but {what} is written as a "
                    f"folder; give a folder name such as {folder_name}"
                )
            shards = sharded.shard_files(entries, max_shard_size or DEFAULT_SHARD_BYTES)
            headers = [
                formats.safetensors.build_header([entries[i] for i in members], file_metadata())
                for _, members in shards
            ]
            size = sum(map(len, headers)) + plan.nbytes
            return cls(
                output, "folder", FOLDER_FORMAT, plan, size, shards, hf_config, headers, entries
            )
        fmt = formats.format_for(output, format)
        if output == "-" and fmt not in formats.STREAMABLE:
            raise UsageError(
                f"{fmt} cannot be written to stdout (it needs a seekable file); "
                "give an output path or use --format safetensors or npz"
            )
        headers = []
        if fmt == "safetensors":  # exact, and checks that every dtype has a safetensors type
            headers = [formats.safetensors.build_header(entries, file_metadata())]
            size = len(headers[0]) + plan.nbytes
        else:
            per_tensor, per_file = _OVERHEAD[fmt]
            size = plan.nbytes + per_tensor * len(entries) + per_file
        kind = "stdout" if output == "-" else "file"
        return cls(output, kind, fmt, plan, size, headers=headers, entries=entries)

    def check(self, *, force: bool) -> None:
        """Refuse a destination that must not or cannot be written (it exists without
        ``force``, the disk is too small), and remove dead runs' temporaries beside it."""
        if self.kind == "stdout":
            return
        check_destination(self.path, force=force, nbytes=self.size, folder=self.kind == "folder")
        clean_stale(os.path.dirname(os.path.abspath(self.path)))

    # --- writing --------------------------------------------------------------------------

    def open(self, tag: str = ""):
        """Create the temporary output and return the sink to feed (``tag``: in its name)."""
        entries = self.entries
        module = formats.module(self.format if self.kind != "folder" else "safetensors")
        if self.kind == "stdout":
            self._stream = sys.stdout.buffer
            return module.Sink(self._stream, entries, file_metadata(self.format))
        if self.kind == "folder":
            self._atomic = AtomicDir(self.path, tag)
            return sharded.Sink(
                self._atomic.path, entries, file_metadata(), self.shards, headers=self.headers
            )
        self._atomic = AtomicFile(self.path, tag)
        if self.format == "safetensors":
            return module.PositionalSink(
                self._atomic.file.fileno(),
                entries,
                file_metadata(),
                path=self._atomic.path,
                header=self.headers[0],
            )
        if self.format == "hdf5":
            self._atomic.file.close()  # h5py opens the path itself
            return module.Sink(self._atomic.path, entries, file_metadata(self.format))
        return module.Sink(self._atomic.file, entries, file_metadata(self.format))

    def join(self, name: str):
        """Another writer's sink into the temporary output another process created beside
        the destination (``name``: its file or folder name), laid out already: positional
        writes only. Found through this process's own output path, so a folder that is not
        shared (or shared under another path) is refused."""
        entries = self.entries
        if os.sep in name or name in ("", ".", ".."):
            raise WeightgenError(f"internal error: {name!r} is not a temporary's name")
        folder = os.path.dirname(self.path) or "."
        path = Path(folder) / name
        if not path.exists():
            raise WeightgenError(
                f"the output folder {folder!r} is not shared: process 0's temporary output is "
                "not in it here; every process must see the same folder (a shared "
                "filesystem, mounted at the same path)"
            )
        if self.kind == "folder":
            return sharded.Sink(path, entries, file_metadata(), self.shards, create=False)
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            sink = formats.safetensors.PositionalSink(
                fd, entries, file_metadata(), create=False, path=path
            )
        except BaseException:
            os.close(fd)
            raise
        return _OwningSink(sink, fd)

    def finish(self) -> None:
        """After the sink closed: the folder's index and config.json; checks the size."""
        if self.kind == "stdout":
            self._stream.flush()
            return
        if self.kind == "folder":
            entries = self.entries
            if len(self.shards) > 1:
                self.add_file(sharded.INDEX_NAME, sharded.index_bytes(entries, self.shards))
            if self.hf_config is not None:
                self.add_file(CONFIG_NAME, config_bytes(self.hf_config))
            return
        if self.format == "safetensors":
            written = os.stat(self._atomic.path).st_size  # defence in depth: the layout is exact
            if written != self.size:
                raise WeightgenError(
                    f"internal error: wrote {written} bytes, expected {self.size}; "
                    "nothing was written"
                )

    def add_file(self, name: str, data: bytes) -> None:
        """A small file inside a folder output (index, config.json, the manifest)."""
        path = self._atomic.path / name
        with open(path, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def files(self, tensor_digests: Mapping[str, bytes], *, sha256: bool = False) -> list[dict]:
        """[{"name", "bytes", "digest"(, "sha256")}] of each file of the output, in name order.

        Digests reuse the tensors' (see digest.py): only the bytes between tensors are read.
        ``sha256`` adds each file's plain sha256, at the cost of reading it whole.
        """
        if self.kind == "stdout":
            return [self._stream_file(tensor_digests)]
        # The weight files' layouts are known (weightgen laid them out): not read back.
        entries = self.entries
        if self.kind == "folder":
            known = {
                name: tuple(formats.safetensors.spans([entries[i] for i in members], len(head)))
                for (name, members), head in zip(self.shards, self.headers)
            }
            layouts = layout.of_folder(self._atomic.path, known=known)
        elif self.format == "safetensors":
            path = self._atomic.path
            spans = tuple(formats.safetensors.spans(entries, len(self.headers[0])))
            layouts = [layout.FileLayout(Path(self.path).name, path, self.size, spans)]
        else:
            layouts = [layout.of_file(self._atomic.path, Path(self.path).name, self.format)]
        found = []
        for item in layouts:
            entry = {
                "name": item.name,
                "bytes": item.size,
                "digest": layout.file_digest(item, tensor_digests).hex(),
            }
            if sha256:
                entry["sha256"] = sha256_file(item.path)
            found.append(entry)
        return found

    def _stream_file(self, tensor_digests: Mapping[str, bytes]) -> dict:
        """stdout cannot be re-read: its digest comes from what was written. For safetensors
        that is the header (known) and the tensors; npz's zip records are not kept."""
        entry: dict = {"name": "-", "bytes": self.size if self.format == "safetensors" else None}
        if self.format == "safetensors":
            entries = self.entries
            header = self.headers[0]
            pieces = [digest.digest_of(header)]
            pieces += [tensor_digests[e.name] for e in entries if e.nbytes]
            entry["digest"] = digest.file_digest(pieces).hex()
        return {k: v for k, v in entry.items() if v is not None}

    @property
    def temporary(self) -> Path | None:
        return self._atomic.path if self._atomic is not None else None

    def commit(self) -> None:
        self.sync()
        self.rename()

    def sync(self) -> None:
        """Everything written on the disk, still under its temporary name."""
        if self._atomic is not None:
            self._atomic.sync()

    def rename(self) -> None:
        """The temporary output becomes the destination, in one step."""
        if self._atomic is not None:
            self._atomic.rename()

    def abort(self) -> None:
        if self._atomic is not None:
            self._atomic.abort()


class _OwningSink:
    """A positional sink that closes the descriptor it was given."""

    def __init__(self, sink, fd: int):
        self._sink, self._fd = sink, fd

    def write(self, index: int, offset: int, chunk) -> None:
        self._sink.write(index, offset, chunk)

    def close(self) -> None:
        try:
            self._sink.close()  # waits for its writes, even when it fails
        finally:
            self._release()

    def abort(self) -> None:
        if self._fd is not None:
            self._sink.abort()
        self._release()

    def _release(self) -> None:
        """Close the descriptor once: its number may soon belong to another file."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
