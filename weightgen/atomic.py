"""Atomic output: a temporary file beside the destination, fsync, rename, fsync the folder.

The destination holds either its old content or the complete new file, never a torn one.
Temporary files are named ``.<name>.<random>.<pid>.weightgen-tmp`` so a later run can tell
them apart from user files.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import io
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from .errors import InsufficientSpaceError, OutputExistsError, UsageError, WeightgenError
from .writes import Writeback

TMP_SUFFIX = ".weightgen-tmp"
# A folder that holds one of these is a checkpoint folder, which --force may replace.
CHECKPOINT_MARKERS = (
    "model.safetensors.index.json",
    "model.safetensors",
    "weightgen.manifest.json",
)


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


def _host_tag() -> str:
    """This machine as a temporary's owner: its host name (made safe for a file name) and
    the first characters of its boot id (a reboot ends every process it ran)."""
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40]
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip().replace("-", "")[:8]
    except OSError:
        boot = "0"
    return f"{host or 'host'}~{boot}"


HOST_TAG = _host_tag()
ABANDONED_AFTER = 24 * 3600  # another host's temporary untouched this long: clearly abandoned


def _temp_name(dest: Path, tag: str = "") -> dict:
    """mkstemp/mkdtemp arguments for ``.<dest>.<tag><random>.<pid>@<host>~<boot>.weightgen-tmp``:
    the owner is recorded with its host and boot, so that a folder shared by several hosts
    never has one judge another's temporaries by a local pid."""
    return {
        "prefix": f".{dest.name}.{tag}",
        "suffix": f".{os.getpid()}@{HOST_TAG}{TMP_SUFFIX}",
        "dir": dest.parent,
    }


def _owner(name: str) -> tuple[int, str | None] | None:
    """(pid, host tag) from a temporary's name; host None for weightgen 0.1.0's names,
    which had the pid alone (written by this host, then)."""
    owner = name[: -len(TMP_SUFFIX)].rsplit(".", 1)[-1]
    pid, _, host = owner.partition("@")
    if not pid.isdigit():
        return None
    return int(pid), host or None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _dead(path: Path, pid: int, host: str | None) -> bool:
    """Provably dead (this host, this boot, no such pid; or this host since rebooted), or
    clearly abandoned (another host's, untouched for ABANDONED_AFTER)."""
    if host is None or host == HOST_TAG:
        return pid != os.getpid() and not _alive(pid)
    if host.split("~")[0] == HOST_TAG.split("~")[0]:
        return True  # this host, an earlier boot
    try:
        return time.time() - path.lstat().st_mtime > ABANDONED_AFTER
    except OSError:
        return False


def clean_stale(folder: str | os.PathLike) -> list[str]:
    """Remove the temporaries that runs which have died left in ``folder``; never those of
    a live run. Returns the names removed."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
            continue
        owner = _owner(name)
        path = Path(folder) / name
        if owner is None or not _dead(path, *owner):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(name)
        except OSError:
            pass
    return removed


def describe_os_error(exc: OSError, dest: str | os.PathLike) -> str:
    """One line for a failed write, with what to do about it."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        hint = "; free some space or choose another folder"
    elif exc.errno == errno.EFBIG:
        hint = "; the file size limit (ulimit -f) or the filesystem does not allow this size"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "; choose a folder you can write to"
    else:
        hint = ""
    return f"cannot write {dest}: {reason}{hint}; nothing was written"


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

    ``folder``: the output is a checkpoint folder; an existing folder is replaced (with
    ``force``) only when it is one, never an arbitrary folder.
    """
    path = Path(dest)
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"output folder {str(parent)!r} does not exist; create it first")
    if path.is_dir() and not folder:
        raise UsageError(f"output {str(path)!r} is a folder; give a file name")
    if (
        folder
        and path.exists()
        and not (path.is_dir() and any((path / marker).is_file() for marker in CHECKPOINT_MARKERS))
    ):
        raise UsageError(
            f"{path} exists and is not a checkpoint folder; weightgen will not replace it"
        )
    if (path.exists() or path.is_symlink()) and not force:
        raise OutputExistsError(f"{path} exists; pass --force (force=True in Python) to replace it")
    free = shutil.disk_usage(parent).free
    if nbytes > free:
        raise InsufficientSpaceError(
            f"{path} needs {human_bytes(nbytes)} but {parent} has {human_bytes(free)} free; "
            "choose another folder or free some space"
        )
    return path


class _WritebackFile(io.FileIO):
    """A raw file whose writes are completed (never short) and written back early."""

    _writeback: Writeback | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            written = super().write(view[done:])
            if not written:
                raise OSError(errno.EIO, "write made no progress")
            done += written
        if self._writeback is None:
            self._writeback = Writeback(self.fileno())
        self._writeback.wrote(self.tell() - done, done)
        return done


class AtomicFile:
    """A temporary file that becomes ``dest`` on ``commit()`` or disappears on ``abort()``."""

    def __init__(self, dest: str | os.PathLike, tag: str = ""):
        self.dest = Path(dest)
        try:
            fd, name = tempfile.mkstemp(**_temp_name(self.dest, tag))  # 0600 until commit
        except OSError as exc:
            raise WeightgenError(
                f"cannot create a file in {self.dest.parent}: {exc.strerror}"
            ) from None
        self.path = Path(name)
        self.file = _WritebackFile(fd, "wb")

    def commit(self) -> None:
        self.sync()
        self.rename()

    def sync(self) -> None:
        """The commit's long part: every byte on the disk (the temporary stays a temporary)."""
        if self.file.closed:  # a writer (h5py) that opened the path itself
            with open(self.path, "rb+") as f:
                os.fsync(f.fileno())
        else:
            os.fsync(self.file.fileno())
            self.file.close()
        os.chmod(self.path, 0o666 & ~_umask())

    def rename(self) -> None:
        """The commit's instant: the temporary becomes ``dest``."""
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

    An existing ``dest`` is replaced only once the new folder is complete (swapped in one
    step on Linux), and removed after, so a failure at any point leaves the old one whole.
    """

    def __init__(self, dest: str | os.PathLike, tag: str = ""):
        self.dest = Path(dest)
        try:
            self.path = Path(tempfile.mkdtemp(**_temp_name(self.dest, tag)))
        except OSError as exc:
            raise WeightgenError(
                f"cannot create a folder in {self.dest.parent}: {exc.strerror}"
            ) from None

    def commit(self) -> None:
        self.sync()
        self.rename()

    def sync(self) -> None:
        """The folder's entries on the disk (its files were synced as they were closed)."""
        fsync_dir(self.path)
        os.chmod(self.path, 0o777 & ~_umask())

    def rename(self) -> None:
        """The new folder becomes ``dest``; the old one, if any, is removed after."""
        if not self.dest.exists():
            os.replace(self.path, self.dest)
            fsync_dir(self.dest.parent)
            return
        # Swap in one step where the kernel can (Linux renameat2), so that no moment exists
        # without a whole checkpoint at dest; elsewhere, move the old one aside first.
        if _exchange(self.path, self.dest):
            old = self.path  # the swap left the old checkpoint at the temporary name
        else:
            old = Path(tempfile.mkdtemp(**_temp_name(self.dest, "old.")))
            os.replace(self.dest, old / "old")
            os.replace(self.path, self.dest)
        fsync_dir(self.dest.parent)
        shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
