"""Writing weights to a file at given offsets, fast: complete writes, early writeback, and
O_DIRECT in large aligned blocks on an I/O thread of its own where the filesystem takes it.

Weights are incompressible: measured on the project's machine, 2.5 GB of them cost 2 to 6 s
of system time through the page cache, time taken from the cores that generate, and 0.1 to
0.3 s with O_DIRECT. Direct writes are synchronous, so they run on one I/O thread per
process, from a small pool of aligned buffers: the writer thread stages the next block while
the disk writes the last one, and memory stays at the pool's size whatever the output.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import queue
import sys
import threading

import numpy as np

DIRECT_ALIGN = 4096  # O_DIRECT's alignment: every common logical block size divides it
DIRECT_BLOCK = 8 << 20  # bytes per direct write
DIRECT_BUFFERS = 4  # blocks staged or in flight, per process
# How much the writer thread (staging copies, hashing) yields the cores to generation: a
# nice value above the process's. XLA's threads run each chunk's partitions in parallel, so a
# partition that waits behind a copy delays the whole chunk; at +5 the writer still gets
# ~15% of a busy core (it needs ~0.2 CPU-s per GiB against ~1.4 for generating it) and the
# rest of its time when the generating threads wait.
WRITER_NICE = 5


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


def pwrite_all(fd: int, data, offset: int) -> None:
    """``os.pwrite`` until every byte is written: a short write (a file-size limit, a
    signal) is completed, or its error raised, never silently cut."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        written = os.pwrite(fd, view[done:], offset + done)
        if not written:
            raise OSError(errno.EIO, "write made no progress")
        done += written


class Writeback:
    """Asks the kernel to start writing a file's data out as it is written (page cache).

    Without this, a GiB sits dirty in the page cache until the commit's fsync, which then
    waits for the whole disk write; started early, the disk works while chunks are generated
    and the final fsync finds little left to do. Tracks the span written since the last
    request (sequential writers make it exact; others just start a little more early).
    """

    def __init__(self, fd: int):
        self._fd = fd
        self._low: int | None = None
        self._high = 0

    def wrote(self, offset: int, nbytes: int) -> None:
        if _SYNC_FILE_RANGE is None:
            return
        self._low = offset if self._low is None else min(self._low, offset)
        self._high = max(self._high, offset + nbytes)
        if self._high - self._low >= _WRITEBACK_EVERY:
            _SYNC_FILE_RANGE(self._fd, self._low, self._high - self._low, _SYNC_FILE_RANGE_WRITE)
            self._low = None
            self._high = 0


def yield_cores(nice: int | None = None) -> None:
    """Lower the calling thread's scheduling priority by ``nice`` (default WRITER_NICE; Linux:
    each thread has its own nice value; raising it needs no privilege). Elsewhere, or where
    refused: no-op."""
    nice = WRITER_NICE if nice is None else nice
    if not sys.platform.startswith("linux") or nice <= 0:
        return
    with contextlib.suppress(OSError, AttributeError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))


_HUGE_PAGE = 2 << 20


def aligned_buffer(nbytes: int) -> np.ndarray:
    """``nbytes`` of a private anonymous map (kept alive by the array), aligned to a huge
    page and backed by huge pages where the kernel offers them (``madvise``; a shared map
    would be shmem, which takes them only where the administrator allowed it). Each direct
    write then pins 4 pages, not 2048, and the staging copy misses the TLB less: measured
    (perf, 1 GiB he-normal), the I/O thread's CPU went from 0.075 to 0.03 s per GiB and the
    writer's from 0.135 to 0.095 s. numpy copies into it with the GIL released (a
    bytes-like slice assignment holds it), so the generating thread dispatches meanwhile."""
    if hasattr(mmap, "MAP_PRIVATE"):  # Unix
        region = mmap.mmap(-1, nbytes + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    else:
        region = mmap.mmap(-1, nbytes + _HUGE_PAGE)
    with contextlib.suppress(AttributeError, OSError):  # no THP: small pages, still aligned
        region.madvise(mmap.MADV_HUGEPAGE)
    whole = np.frombuffer(region, np.uint8)
    skip = -whole.ctypes.data % _HUGE_PAGE
    return whole[skip : skip + nbytes]


class _DirectIO:
    """The process's I/O thread and its pool of aligned buffers (created on first use)."""

    def __init__(self):
        self.block = DIRECT_BLOCK
        self.free: queue.Queue = queue.Queue()
        for _ in range(DIRECT_BUFFERS):
            self.free.put(aligned_buffer(self.block))
        self.jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._in_flight = 0
        threading.Thread(target=self._run, name="weightgen-direct-io", daemon=True).start()

    def take(self) -> np.ndarray:
        """A free buffer: waits for the I/O thread to return one, unless none is in flight
        (every buffer is some writer's unfinished stage: then one more is made, never a
        wait that cannot end)."""
        while True:
            try:
                return self.free.get(timeout=0.05)
            except queue.Empty:
                with self._lock:
                    if not self._in_flight:
                        return aligned_buffer(self.block)

    def submit(self, writer, buffer: np.ndarray, nbytes: int, offset: int) -> None:
        with self._lock:
            self._in_flight += 1
        self.jobs.put((writer, buffer, nbytes, offset))

    def _run(self) -> None:
        while True:
            writer, buffer, nbytes, offset = self.jobs.get()
            try:
                writer._write_block(buffer, nbytes, offset)
            except BaseException as exc:  # kept for the writer to raise
                writer._error = writer._error or exc
            finally:
                self.free.put(buffer)
                with self._lock:
                    self._in_flight -= 1
                writer._done()


_IO: _DirectIO | None = None
_IO_LOCK = threading.Lock()


def _direct_io() -> _DirectIO:
    """The process's pool; a new one if the block size changed while it was idle (tests
    make blocks small)."""
    global _IO
    with _IO_LOCK:
        if _IO is None or (_IO.block != DIRECT_BLOCK and _IO.free.qsize() == DIRECT_BUFFERS):
            _IO = _DirectIO()
        return _IO


class PositionalWriter:
    """Positional writes to one file, sent to the disk in large aligned blocks with O_DIRECT
    where the filesystem takes it, through the page cache otherwise.

    Writes that continue where the last one ended form a stream: its bytes are staged in an
    aligned buffer and written in DIRECT_BLOCK blocks by the I/O thread; its unaligned head
    and tail (a few KiB, shared with a neighbouring writer's range) go through the page
    cache. Ranges written by different writers never share an aligned page, so direct and
    cached writes never overlap. Any refusal (EINVAL: tmpfs on older kernels, some FUSE or
    network filesystems, an alignment the device wants larger) falls back to the page cache.
    """

    def __init__(self, fd: int, path: str | os.PathLike | None = None):
        self._fd = fd
        self._writeback = Writeback(fd)
        self._direct: int | None = None
        if path is not None and hasattr(os, "O_DIRECT"):
            with contextlib.suppress(OSError):
                self._direct = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
        self._io = _direct_io() if self._direct is not None else None
        self._stage: np.ndarray | None = None
        self._next: int | None = None  # the offset a write must start at to continue the stream
        self._base = 0  # the file offset of the stage's first byte (aligned)
        self._fill = 0
        self._submitted = 0  # blocks handed to the I/O thread...
        self._completed = 0  # ...and written by it (or failed)
        self._idle = threading.Condition()
        self._error: BaseException | None = None
        self._refused = False  # the filesystem refused a direct write: the page cache now

    def write(self, offset: int, data) -> None:
        self._raise()
        view = memoryview(data).cast("B")
        end = offset + len(view)
        if self._direct is None:
            pwrite_all(self._fd, view, offset)
            self._writeback.wrote(offset, len(view))
            return
        if offset != self._next:  # a new stream (the staged one is written out first)
            self._end_stream()
            self._base = offset
        if not self._fill and self._base % DIRECT_ALIGN:  # the stream's unaligned head
            head = min(len(view), -self._base % DIRECT_ALIGN)
            pwrite_all(self._fd, view[:head], self._base)
            self._base += head
            view = view[head:]
        block = self._io.block
        while len(view):  # staged from an aligned offset on
            if self._stage is None:
                self._stage = self._io.take()
            take = min(len(view), block - self._fill)
            self._stage[self._fill : self._fill + take] = np.frombuffer(view[:take], np.uint8)
            self._fill += take
            view = view[take:]
            if self._fill == block:
                self._submit(block)
        self._next = end

    def _submit(self, nbytes: int) -> None:
        """Hand the stage's first ``nbytes`` (aligned) to the I/O thread; keep the rest in a
        fresh buffer."""
        full, rest = self._stage, self._fill - nbytes
        self._stage = None
        if rest:
            self._stage = self._io.take()
            self._stage[:rest] = full[nbytes : self._fill]
        self._io.submit(self, full, nbytes, self._base)
        with self._idle:  # counted after the hand-over: an interrupt between the two
            self._submitted += 1  # can make a wait end early, never hang
        self._base += nbytes
        self._fill = rest

    def _write_block(self, buffer: np.ndarray, nbytes: int, offset: int) -> None:
        """On the I/O thread: one aligned block, directly; the page cache if refused."""
        if not self._refused:
            try:
                pwrite_all(self._direct, memoryview(buffer)[:nbytes], offset)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._refused = True
        pwrite_all(self._fd, memoryview(buffer)[:nbytes], offset)

    def _done(self) -> None:
        with self._idle:
            self._completed += 1
            self._idle.notify_all()

    def pause(self) -> None:
        """The writer moves on to another file: write out what is staged (a stream that
        resumes here later starts anew), so that idle files hold no buffer."""
        if self._direct is not None:
            self._end_stream()

    def _end_stream(self) -> None:
        if self._fill >= DIRECT_ALIGN:
            self._submit(self._fill // DIRECT_ALIGN * DIRECT_ALIGN)
        if self._fill:  # the unaligned tail
            pwrite_all(self._fd, memoryview(self._stage)[: self._fill], self._base)
            self._fill = 0
        if self._stage is not None:
            self._io.free.put(self._stage)
            self._stage = None
        self._next = None

    def _wait(self, timeout: float | None = None) -> None:
        """Until the I/O thread has written every block handed to it (or ``timeout``)."""
        with self._idle:
            self._idle.wait_for(lambda: self._completed >= self._submitted, timeout)

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Write what is staged, wait for the I/O thread, and fsync; the caller closes its
        own descriptor."""
        try:
            if self._direct is not None:
                self._end_stream()
        finally:  # blocks in flight are waited for even when the tail's write failed
            if self._io is not None:
                self._wait()
            self._close_direct()
        self._raise()
        os.fsync(self._fd)

    def abort(self) -> None:
        """Drop what is staged (the output is being thrown away) and let go of the disk."""
        if self._io is not None:
            if self._stage is not None:
                self._io.free.put(self._stage)
                self._stage = None
            self._fill = 0
            self._wait(timeout=60)  # a disk that hangs must not hang the clean-up forever
        self._close_direct()

    def _close_direct(self) -> None:
        if self._direct is not None:
            with contextlib.suppress(OSError):
                os.close(self._direct)
            self._direct = None
