"""Atomic output: a temporary file beside the destination, fsync, rename, fsync the folder.

The destination holds either its old content or the complete new file, never a torn one.
Temporary files are named ``.<name>.<random>.<pid>.weightgen-tmp`` so a later run can tell
them apart from user files.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path

from .errors import InsufficientSpaceError, OutputExistsError, UsageError, WeightgenError

TMP_SUFFIX = ".weightgen-tmp"
INDEX_NAME = "model.safetensors.index.json"  # marks a folder weightgen may replace


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_destination(
    dest: str | os.PathLike, *, force: bool, nbytes: int, folder: bool = False
) -> Path:
    """Refuse, before any work, a destination that cannot or must not be written.

    ``folder``: the output is a sharded checkpoint folder; an existing folder is replaced
    (with ``force``) only when it is one, never an arbitrary folder.
    """
    path = Path(dest)
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"output folder {str(parent)!r} does not exist; create it first")
    if path.is_dir() and not folder:
        raise UsageError(f"output {str(path)!r} is a folder; give a file name")
    if folder and path.exists() and not (path.is_dir() and (path / INDEX_NAME).is_file()):
        raise UsageError(
            f"{path} exists and is not a sharded checkpoint; weightgen will not replace it"
        )
    if (path.exists() or path.is_symlink()) and not force:
        raise OutputExistsError(f"{path} exists; pass --force to replace it")
    free = shutil.disk_usage(parent).free
    if nbytes > free:
        raise InsufficientSpaceError(
            f"{path} needs {human_bytes(nbytes)} but {parent} has {human_bytes(free)} free; "
            "choose another folder or free some space"
        )
    return path


def _sync_file_range():
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return function


_SYNC_FILE_RANGE = _sync_file_range()  # Linux only; None elsewhere
_SYNC_FILE_RANGE_WRITE = 2
_WRITEBACK_EVERY = 64 << 20


class _WritebackFile(io.FileIO):
    """A file that asks the kernel to start writing its data out as it goes.

    Without this, a GiB sits dirty in the page cache until the commit's fsync, which then
    waits for the whole disk write; started early, the disk works while chunks are generated
    and the final fsync finds little left to do.
    """

    _started = 0

    def write(self, data) -> int:
        written = super().write(data)
        position = self.tell()
        if _SYNC_FILE_RANGE is not None and position - self._started >= _WRITEBACK_EVERY:
            _SYNC_FILE_RANGE(
                self.fileno(), self._started, position - self._started, _SYNC_FILE_RANGE_WRITE
            )
            self._started = position
        return written


class AtomicFile:
    """A temporary file that becomes ``dest`` on ``commit()`` or disappears on ``abort()``."""

    def __init__(self, dest: str | os.PathLike):
        self.dest = Path(dest)
        try:
            fd, name = tempfile.mkstemp(  # mode 0600 until commit
                prefix=f".{self.dest.name}.",
                suffix=f".{os.getpid()}{TMP_SUFFIX}",
                dir=self.dest.parent,
            )
        except OSError as exc:
            raise WeightgenError(
                f"cannot create a file in {self.dest.parent}: {exc.strerror}"
            ) from None
        self.path = Path(name)
        self.file = _WritebackFile(fd, "wb")

    def commit(self) -> None:
        if self.file.closed:  # a writer (h5py) that opened the path itself
            with open(self.path, "rb+") as f:
                os.fsync(f.fileno())
        else:
            os.fsync(self.file.fileno())
            self.file.close()
        os.chmod(self.path, 0o666 & ~_umask())
        os.replace(self.path, self.dest)
        fsync_dir(self.dest.parent)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = (
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    )
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


class AtomicDir:
    """A temporary folder that becomes ``dest`` on ``commit()`` (sharded checkpoints).

    An existing ``dest`` is moved aside only once the new folder is complete, and removed
    after the rename, so a failure at any point leaves the old checkpoint whole.
    """

    def __init__(self, dest: str | os.PathLike):
        self.dest = Path(dest)
        try:
            self.path = Path(
                tempfile.mkdtemp(
                    prefix=f".{self.dest.name}.",
                    suffix=f".{os.getpid()}{TMP_SUFFIX}",
                    dir=self.dest.parent,
                )
            )
        except OSError as exc:
            raise WeightgenError(
                f"cannot create a folder in {self.dest.parent}: {exc.strerror}"
            ) from None

    def commit(self) -> None:
        fsync_dir(self.path)
        os.chmod(self.path, 0o777 & ~_umask())
        old = None
        if self.dest.exists():
            old = Path(
                tempfile.mkdtemp(
                    prefix=f".{self.dest.name}.old.",
                    suffix=f".{os.getpid()}{TMP_SUFFIX}",
                    dir=self.dest.parent,
                )
            )
            os.replace(self.dest, old / "old")
        os.replace(self.path, self.dest)
        fsync_dir(self.dest.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
