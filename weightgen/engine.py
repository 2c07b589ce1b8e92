"""The engine: jit-compiled chunks on the selected devices, streamed to a sink.

Data flow for one tensor: flat ranges of ``chunk_elems`` elements -> one jit kernel call each
(sharded over the devices; the key data carries the range's start, so the kernel compiles
once per family, dtype and size) -> asynchronous device-to-host copies, a few in flight ->
a bounded queue -> a writer thread that feeds the sink (file writes release the GIL).
Host memory is a few chunks whatever the tensor's size. Chunk size and device count never
change a byte: every element is a function of the key and its flat index only.
"""

from __future__ import annotations

import collections
import functools
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from . import prng, samplers
from .errors import GenerationError, UsageError
from .formats.base import as_bytes
from .plan import Plan, TensorRange, TensorSpec

# Elements per kernel call and device. On CPU the threefry kernel is fastest when a chunk's
# working set stays in cache (2**20: 158 M elements/s; 2**22: 37 M/s, see DESIGN.md); with
# the writer running beside it, 2**19 measured best end to end (1 GiB he-normal: a third
# of the system time and ~50 MiB less peak RSS than 2**20). Accelerators want large launches.
CPU_CHUNK_PER_DEVICE = 2**19
ACCELERATOR_CHUNK_PER_DEVICE = 2**24
IN_FLIGHT = 3  # device chunks dispatched ahead of the host
QUEUE_DEPTH = 4  # host chunks waiting for the writer

COMPILE_CACHE_ENV = "WEIGHTGEN_COMPILE_CACHE"  # "0" turns the persistent cache off


def compile_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "weightgen" / "jax"


def configure_jax(*, x64: bool, compile_cache: bool = True) -> None:
    """Process-wide JAX settings for a run: x64 when a tensor needs it; the compile cache."""
    jax.config.update("jax_enable_x64", x64)
    if compile_cache and os.environ.get(COMPILE_CACHE_ENV, "1") != "0":
        try:
            cache = compile_cache_dir()
            cache.mkdir(parents=True, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", str(cache))
            # Our kernels compile in well under JAX's default 1 s threshold; cache them all.
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        except OSError:
            pass  # an unwritable cache folder only costs compile time
    prng.check_config()


def select_devices(spec: str | None) -> list[jax.Device]:
    """``None`` (JAX's default backend, all its local devices), ``cpu``, ``gpu``, ``tpu``,
    ``all``, or a platform with indices such as ``gpu:0,1``."""
    if spec is None or spec.strip().lower() in ("", "default", "all"):
        return jax.local_devices()
    text = spec.strip().lower()
    platform, _, ids = text.partition(":")
    if platform == "cuda":
        platform = "gpu"
    try:
        available = jax.local_devices(backend=platform)
    except RuntimeError:
        have = ", ".join(sorted({d.platform for d in jax.devices()}))
        raise UsageError(
            f"--devices {spec}: no {platform} devices here (JAX sees: {have}); "
            "install a jax build for that platform or choose another"
        ) from None
    if not ids:
        return available
    try:
        wanted = [int(i) for i in ids.split(",")]
    except ValueError:
        raise UsageError(f"--devices {spec}: expected indices such as {platform}:0,1") from None
    bad = [i for i in wanted if not 0 <= i < len(available)]
    if bad or len(set(wanted)) != len(wanted):
        raise UsageError(
            f"--devices {spec}: {platform} has devices 0..{len(available) - 1}, each once"
        )
    return [available[i] for i in wanted]


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class Engine:
    """Generates tensors chunk by chunk on ``devices``; ``chunk_elems`` never changes bytes."""

    def __init__(self, devices: Sequence[jax.Device] | None = None, chunk_elems: int | None = None):
        self.devices = list(devices) if devices else jax.local_devices()
        ndev = len(self.devices)
        if chunk_elems is None:
            per_device = (
                CPU_CHUNK_PER_DEVICE
                if self.devices[0].platform == "cpu"
                else ACCELERATOR_CHUNK_PER_DEVICE
            )
            chunk_elems = per_device * ndev
        if chunk_elems < 1:
            raise UsageError(f"--chunk-size {chunk_elems}: must be a positive number of elements")
        self.chunk_elems = -(-chunk_elems // ndev) * ndev  # a multiple of the device count
        if ndev == 1:
            self._sharding = SingleDeviceSharding(self.devices[0])
        else:
            mesh = Mesh(np.array(self.devices), ("devices",))
            self._sharding = NamedSharding(mesh, PartitionSpec("devices"))
        self._kernels: dict[tuple, Callable] = {}
        self._slicers: dict[int, Callable] = {}

    def kernel_elems(self, numel: int) -> int:
        """Kernel size for a tensor: the chunk size, or the next power of two for a small
        tensor (so small tensors don't pay for a full chunk, and sizes share compiles)."""
        ndev = len(self.devices)
        small = -(-_next_pow2(numel) // ndev) * ndev
        return min(self.chunk_elems, small)

    def _kernel(self, spec: TensorSpec, draw, size: int) -> Callable:
        signature = (samplers.kernel_signature(spec), size)
        kernel = self._kernels.get(signature)
        if kernel is None:

            def run(key_data, coefficients):
                return draw(prng.wrap(key_data), coefficients, size)

            kernel = jax.jit(run, out_shardings=self._sharding)
            self._kernels[signature] = kernel
        return kernel

    def chunks(
        self, spec: TensorSpec, start: int = 0, stop: int | None = None
    ) -> Iterator[np.ndarray]:
        """Elements ``start .. stop`` of the flattened tensor (default: all of it) as host
        arrays in ``spec.dtype``, in order."""
        numel = spec.numel
        stop = numel if stop is None else stop
        if not 0 <= start <= stop <= numel:
            raise ValueError(f"range {start}..{stop} outside {spec.describe()}")
        if start == stop:
            return
        key = prng.base_key(spec.seed, spec.fold_in)
        size = self.kernel_elems(stop - start)
        if spec.init.elementwise:
            coefficients, draw = samplers.elementwise(spec)
            kernel = self._kernel(spec, draw, size)
            words = prng.key_words(key)
            finish = samplers.finish(spec)  # a transform's eager ops, if any

            def launch(flat_start: int) -> tuple[jax.Array, slice]:
                # The last chunk is computed whole (one compiled size) and cut on the host.
                chunk = kernel(prng.offset_key_data(words, flat_start), coefficients)
                if finish is not None:
                    chunk = finish(chunk)
                return chunk, slice(0, min(size, stop - flat_start))

        else:
            with jax.default_device(self.devices[0]):
                flat = samplers.whole(spec, key).reshape(-1)
            size = min(size, numel)
            launch = functools.partial(self._slice, flat, size=size, stop=stop)
        # On an accelerator, start each device-to-host copy as soon as the chunk is queued.
        # On CPU the result already is host memory: the "copy" would be a real second copy
        # (measured: ~0.5 s per GiB), and np.asarray reads the buffer in place instead.
        copy_early = self.devices[0].platform != "cpu"
        in_flight: collections.deque = collections.deque()
        for flat_start in range(start, stop, size):
            chunk, valid = launch(flat_start)
            if copy_early:
                chunk.copy_to_host_async()
            in_flight.append((flat_start, chunk, valid))
            if len(in_flight) > IN_FLIGHT:
                yield _to_host(spec, *in_flight.popleft())
        while in_flight:
            yield _to_host(spec, *in_flight.popleft())

    def _slice(
        self, flat: jax.Array, start: int, *, size: int, stop: int
    ) -> tuple[jax.Array, slice]:
        """``size`` elements of a whole tensor on the device, from ``start`` (before ``stop``).

        One compiled slice for every chunk: the start is an argument, and for the last chunk
        of the tensor it is clamped (by dynamic_slice) to the final ``size`` elements, of
        which the host keeps the new ones. Past 2**31 elements the start needs 64 bits;
        static slices then.
        """
        numel = flat.shape[0]
        valid = min(size, stop - start)
        if numel >= 2**31:
            return flat[start : start + valid], slice(0, valid)
        slicer = self._slicers.get(size)
        if slicer is None:
            slicer = jax.jit(lambda a, s: jax.lax.dynamic_slice_in_dim(a, s, size))
            self._slicers[size] = slicer
        clamped = min(start, numel - size)  # what dynamic_slice does to a start past the end
        skip = start - clamped
        return slicer(flat, np.int32(start)), slice(skip, skip + valid)


def _to_host(spec: TensorSpec, flat_start: int, chunk: jax.Array, valid: slice) -> np.ndarray:
    host = np.asarray(chunk)
    if valid.stop - valid.start < host.size:
        host = host[valid]
    if spec.zero_rows:
        host = zero_rows(host, flat_start, spec)
    return host


def zero_rows(host: np.ndarray, flat_start: int, spec: TensorSpec) -> np.ndarray:
    """``chunk.at[rows].set(0)`` for the rows of ``spec.zero_rows`` this chunk overlaps; a
    copy only when one does (the device buffer read in place is not writable)."""
    row_elems = spec.numel // spec.shape[0]
    copied = False
    for row in spec.zero_rows:
        begin = max(0, row * row_elems - flat_start)
        end = min(host.size, (row + 1) * row_elems - flat_start)
        if begin < end:
            if not copied:
                host, copied = host.copy(), True
            host[begin:end] = 0
    return host


def whole_ranges(plan: Plan) -> list[TensorRange]:
    return [TensorRange(i, 0, t.numel) for i, t in enumerate(plan.tensors)]


class Tap(Protocol):
    """Sees every chunk written (hashing, checking); raises to stop the run."""

    def update(self, number: int, data: memoryview) -> None:
        """The next bytes of range ``number`` (in order within a range)."""

    def close(self) -> None: ...


class Stopped(Exception):
    """``run`` was asked to stop (its ``stop`` event was set from another thread)."""


def run(
    engine: Engine,
    plan: Plan,
    sink,
    *,
    ranges: Sequence[TensorRange] | None = None,
    taps: Sequence[Tap] = (),
    on_bytes: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Generate ``ranges`` (default: every tensor whole, in plan order) into ``sink``.

    Generation and writing overlap: this thread dispatches kernels, a writer thread calls
    ``sink.write(tensor_index, element_offset, chunk)`` and then each tap with the chunk's
    bytes (where hashing happens, off the generating thread). The first error from either
    side stops both; so does ``stop`` (checked between chunks: raises Stopped).
    ``progress(number)``, if given, is called by this thread as it begins range ``number``
    and after each of its chunks is queued (a peer's watcher sees that the work moves).
    """
    ranges = whole_ranges(plan) if ranges is None else list(ranges)
    pending: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
    failure: list[BaseException] = []

    def writer() -> None:
        while (item := pending.get()) is not None:
            if failure:
                continue  # drain so the producer never blocks
            number, offset, chunk = item
            try:
                sink.write(ranges[number].index, offset, chunk)
                data = as_bytes(chunk)
                for tap in taps:
                    tap.update(number, data)
                if on_bytes is not None:
                    on_bytes(chunk.nbytes)
            except BaseException as exc:
                failure.append(exc)

    thread = threading.Thread(target=writer, name="weightgen-writer", daemon=True)
    thread.start()
    try:
        for number, part in enumerate(ranges):
            spec = plan.tensors[part.index]
            offset = part.start
            if progress is not None:
                progress(number)
            try:
                for chunk in engine.chunks(spec, part.start, part.stop):
                    if failure:
                        break
                    if stop is not None and stop.is_set():
                        raise Stopped
                    pending.put((number, offset, chunk))
                    if progress is not None:
                        progress(number)
                    offset += chunk.size
            except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
                if isinstance(exc, UsageError):
                    raise
                raise GenerationError(f"while generating {spec.describe()}: {exc}") from exc
            if failure:
                break
    finally:
        pending.put(None)
        thread.join()
    if failure:
        raise failure[0]
    for tap in taps:
        tap.close()
