"""The engine: jit-compiled chunks on the selected devices, streamed to a sink.

Data flow for one tensor: flat ranges of ``chunk_elems`` elements -> one jit kernel call each
(sharded over the devices; the key data carries the range's start, so the kernel compiles
once per family, dtype and size) -> asynchronous device-to-host copies, a few in flight ->
a bounded queue -> a writer thread that feeds the sink (file writes release the GIL).
Host memory is a few chunks whatever the tensor's size. Consecutive tensors smaller than a
chunk that share a kernel go out together, as the rows of one vmapped call (a model's
experts: one call for many, not one each). Chunk size, batching and device count never
change a byte: every element is a function of the key and its flat index only.
"""

from __future__ import annotations

import collections
import math
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from . import prng, samplers
from .errors import GenerationError, UsageError
from .formats.base import as_bytes
from .plan import Plan, TensorRange, TensorSpec
from .writes import yield_cores

# Elements per kernel call and device. On CPU the threefry kernel is fastest when a chunk's
# working set stays in cache (2**20: 158 M elements/s; 2**22: 37 M/s, see DESIGN.md); with
# the writer running beside it, 2**19 measured best end to end (1 GiB he-normal: a third
# of the system time and ~50 MiB less peak RSS than 2**20). Accelerators want large launches.
CPU_CHUNK_PER_DEVICE = 2**19
ACCELERATOR_CHUNK_PER_DEVICE = 2**24
# The small parts of a quantized weight (scales) kept from its first part for the next,
# when all of them fit in this much: a float32 scale per 128x128 block of a 64 GiB weight.
QUANT_CACHE_BYTES = 64 << 20
QUANT_AHEAD = 2  # bands drawn ahead of the one being handed to the writer
# A quantized weight's bands go to the kernel a few at a time, up to this many elements
# (bands of a 2048-wide weight are 2**18: per call, dispatch and landing cost ~0.3 ms).
QUANT_CALL_ELEMS = 2**20
GLOBAL_SCALES_KEPT = 256  # ct-nvfp4 global scales remembered (a few layers' fused groups)
IN_FLIGHT = 3  # device chunks dispatched ahead of the host
QUEUE_DEPTH = 4  # host chunks waiting for the writer

COMPILE_CACHE_ENV = "WEIGHTGEN_COMPILE_CACHE"  # "0" turns the persistent cache off

# Lanes: a run on the one CPU device that quantizes or hashes gets a second CPU device
# (configure_jax), hidden from everything else (select_devices), and whole kernel calls
# alternate between the two. A device runs its calls one after another, and XLA splits
# each call into one task per core and waits for the slower: whatever holds a core up (a
# band's quantizer, memory-bound for about half its time; the writer thread's hashing)
# leaves the other idle. On two devices, the other device's call fills the gap. Measured on
# 2 cores: 32 experts' 96 weights quantized (the engine alone) 6.0 s on one device, 4.8 s
# on two; the Llama-3.2-1B spec with its manifest 4.89 s on one, 4.56 s on two (4.45 s and
# 4.56 s without a manifest, and bfloat16 experts to /dev/null 5.6 s and 5.75 s: so chunks
# alternate only when hashing). A call's bytes do not depend on its device.
_LANES = 2
# A hashing run's tensor of fewer chunks than this stays on the first lane: on the second,
# its kernel's compile (or cache load) would cost more than the overlap saves.
LANE_MIN_CHUNKS = 8
_spare_cpu: list[bool] = []  # [True] once configure_jax has added the second lane
# Compiled kernels, shared by every engine of the process, by (placement, signature): a
# library caller's next run (or a test suite's) reuses them. Each engine made its own, so
# each run traced, lowered and compiled every kernel again: ~0.1 s a kernel, 0.6 of the
# 0.64 s of a tiny model's second write (the persistent cache saves only the compile).
_COMPILED: dict[tuple, Callable] = {}


def host_threads() -> int:
    """The cores this process may run on (its CPU affinity, as ``taskset`` sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def compile_cache_dir() -> Path:
    """The persistent compile cache: a folder per count of usable cores.

    XLA's CPU backend splits a compiled loop into as many parallel tasks as the process has
    cores *when it compiles*, and JAX's cache key does not include that count: a kernel
    compiled under ``taskset -c 0`` and loaded by a process on 2 cores runs on one of them
    (measured: 1 GiB he-normal, 1.25 s instead of 0.72 s on 2 cores). Keyed by the count, a
    process only ever loads what was compiled for as many cores as it has."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "weightgen" / "jax" / f"cores-{host_threads()}"


def configure_jax(*, x64: bool, compile_cache: bool = True, lanes: bool = False) -> None:
    """Process-wide JAX settings for a run: x64 when a tensor needs it; the compile cache;
    with ``lanes`` (a run that quantizes or hashes), a second CPU device (see _LANES),
    unless the CPU device count is set already (``jax_num_cpu_devices``, XLA_FLAGS), JAX
    has started, or the process has one core."""
    jax.config.update("jax_enable_x64", x64)
    if lanes and not _spare_cpu and host_threads() > 1 and _cpu_devices_unset():
        try:
            jax.config.update("jax_num_cpu_devices", _LANES)
            _spare_cpu.append(True)
        except RuntimeError:  # JAX's backends are up (a library caller): one device it is
            pass
    cache = None
    if compile_cache and os.environ.get(COMPILE_CACHE_ENV, "1") != "0":
        try:
            cache = compile_cache_dir()
            cache.mkdir(parents=True, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", str(cache))
            # Our kernels compile in well under JAX's default 1 s threshold; cache them all.
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        except OSError:
            cache = None  # an unwritable cache folder only costs compile time
    prng.check_config(remember=cache)


def _cpu_devices_unset() -> bool:
    flags = os.environ.get("XLA_FLAGS", "")
    return jax.config.jax_num_cpu_devices < 0 and "host_platform_device_count" not in flags


def _spare_devices() -> list[jax.Device]:
    """The CPU device configure_jax added as a second lane (none if it added none)."""
    return jax.local_devices(backend="cpu")[1:] if _spare_cpu else []


def lanes(devices: Sequence[jax.Device]) -> list[jax.Device]:
    """The devices whole calls alternate over: the run's devices, and the added CPU device
    beside a run on the one CPU device."""
    devices = list(devices)
    if len(devices) == 1 and devices[0].platform == "cpu":
        return devices + _spare_devices()
    return devices


def select_devices(spec: str | None) -> list[jax.Device]:
    """``None`` (JAX's default backend, all its local devices), ``cpu``, ``gpu``, ``tpu``,
    ``all``, or a platform with indices such as ``gpu:0,1``. The CPU device added as a
    second lane (configure_jax) is never among them, nor counted by an index."""
    spare = _spare_devices()
    if spec is None or spec.strip().lower() in ("", "default", "all"):
        return [d for d in jax.local_devices() if d not in spare]
    text = spec.strip().lower()
    platform, _, ids = text.partition(":")
    if platform == "cuda":
        platform = "gpu"
    try:
        available = [d for d in jax.local_devices(backend=platform) if d not in spare]
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


@dataclass(frozen=True)
class Piece:
    """Elements ``start .. stop`` of a tensor's flat data, with the tensor's key words."""

    spec: TensorSpec
    start: int
    stop: int
    words: tuple[int, int]


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class Engine:
    """Generates tensors chunk by chunk on ``devices``; ``chunk_elems`` never changes bytes."""

    def __init__(
        self,
        devices: Sequence[jax.Device] | None = None,
        chunk_elems: int | None = None,
        lanes: Sequence[jax.Device] | None = None,
        alternate_chunks: bool = False,
    ):
        self.devices = list(devices) if devices else jax.local_devices()
        # Where whole calls go, round robin: a quantized weight's bands always; with
        # ``alternate_chunks``, an elementwise tensor's chunks too, where ``devices`` is one
        # device and ``lanes`` more (else chunks are sharded over ``devices``).
        self.lanes = list(lanes) if lanes else self.devices
        self._on_lane = [SingleDeviceSharding(d) for d in self.lanes]
        self._chunk_lanes = len(self.lanes) if alternate_chunks and len(self.devices) == 1 else 1
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
        # A batch of small pieces is (rows, size): each row sharded as a chunk is.
        self._batch_sharding = (
            self._sharding if ndev == 1 else NamedSharding(mesh, PartitionSpec(None, "devices"))
        )
        # weightgen's unrolled threefry on CPU, JAX's own elsewhere (same bits; prng.py).
        self.unrolled = prng.unrolled_for(self.devices[0].platform)
        self._kernels: dict[tuple, Callable] = {}  # what this engine used, from _COMPILED
        self._placement = (self.unrolled, tuple(self.devices), tuple(self.lanes))
        self._coefficients: dict[tuple, tuple] = {}
        self._signatures: dict[tuple, tuple] = {}
        self._quant_cache: dict[tuple, np.ndarray] = {}  # (weight, part, band) -> a band's part
        self._quantizer: ThreadPoolExecutor | None = None  # quantizes bands (numpy, off-GIL)
        self._global_scales: dict[tuple, np.float32] = {}  # (weight names) -> global part
        self._words: dict[tuple, tuple[int, int]] = {}  # (seed, fold_in) -> key words
        # On an accelerator, start each device-to-host copy as soon as the call is queued.
        # On CPU the result already is host memory: the "copy" would be a real second copy
        # (measured: ~0.5 s per GiB), and np.asarray reads the buffer in place instead.
        self._copy_early = self.devices[0].platform != "cpu"

    def kernel_elems(self, numel: int) -> int:
        """Kernel size for a tensor: the chunk size, or the next power of two for a small
        tensor (so small tensors don't pay for a full chunk, and sizes share compiles)."""
        ndev = len(self.devices)
        small = -(-_next_pow2(numel) // ndev) * ndev
        return min(self.chunk_elems, small)

    def _kernel(
        self,
        spec: TensorSpec,
        draw,
        size: int,
        rows: int | None = None,
        device: int | None = None,
    ) -> Callable:
        """The jitted draw of ``size`` elements from one row of key data; with ``rows``, mapped
        over that many rows of key data and coefficients (a batch of small pieces: every
        element computed exactly as in the chunk kernel); with ``device``, whole on that
        lane (a quantized weight's band, or a hashing run's alternated chunk). Compiled once
        per signature."""
        signature = (self._signature(spec), size) + (() if rows is None else (rows,))
        signature += () if device is None else ("on device", device)
        unrolled = self.unrolled

        def make() -> Callable:
            def run(key_data, coefficients):
                return draw(prng.wrap(key_data, unrolled=unrolled), coefficients, size)

            if device is not None:
                return jax.jit(run, out_shardings=self._on_lane[device])
            if rows is None:
                return jax.jit(run, out_shardings=self._sharding)
            return jax.jit(jax.vmap(run), out_shardings=self._batch_sharding)

        return self._compiled(signature, make)

    def _compiled(self, signature: tuple, make: Callable[[], Callable]) -> Callable:
        """The kernel of ``signature`` on this engine's devices, lanes and threefry: made
        once per process (_COMPILED), noted in ``_kernels`` as this engine's."""
        kernel = self._kernels.get(signature)
        if kernel is None:
            kernel = _cached(_COMPILED, (self._placement, signature), make)
            self._kernels[signature] = kernel
        return kernel

    def _elementwise(self, spec: TensorSpec) -> tuple[tuple, Callable]:
        """``samplers.elementwise(spec)``, once per distinct parameter set, dtype and shape:
        its coefficients are eager JAX scalars (a few dispatches), the same for every tensor
        that shares them (a model's experts, its layers)."""
        shape = spec.shape if spec.init.family == "variance_scaling" else None

        def make() -> tuple[tuple, Callable]:
            # JAX computes these scalars eagerly on the device it draws on: on another
            # platform's device (a GPU beside --devices cpu) they could round differently.
            with jax.default_device(self.devices[0]):
                return samplers.elementwise(spec)

        return _cached(self._coefficients, (_token(spec), shape), make)

    def _signature(self, spec: TensorSpec) -> tuple:
        """``samplers.kernel_signature(spec)``, looked up once per parameter set."""
        return _cached(self._signatures, _token(spec), lambda: samplers.kernel_signature(spec))

    def chunks(
        self,
        spec: TensorSpec,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Elements ``start .. stop`` of the flattened tensor (default: all of it) as host
        arrays in ``spec.dtype``, in order."""
        stop = spec.numel if stop is None else stop
        words = prng.derive(spec.seed, spec.fold_in)
        for landed in self.stream([Piece(spec, start, stop, words)]):
            for _number, _offset, host in landed:
                yield host

    def stream(
        self, pieces: Sequence[Piece], on_piece: Callable[[int], None] | None = None
    ) -> Iterator[list[tuple[int, int, np.ndarray]]]:
        """Every piece's elements, in order, as lists of ``(piece number, first element,
        host array)``: one list per kernel call, at most a chunk's worth of elements.

        A piece as large as a chunk or more is cut into chunks; consecutive small pieces
        that share a kernel (family, dtypes, size class) share one call too, a batch of
        rows, so a plan of many small tensors pays per chunk, not per tensor. Calls are
        dispatched ``IN_FLIGHT`` ahead of the host. ``on_piece(number)`` is called as the
        dispatching of a piece begins (before its first kernel compiles or its QR runs).
        """
        in_flight: collections.deque = collections.deque()
        for call in self._calls(pieces, on_piece):
            in_flight.append(call)
            if len(in_flight) > IN_FLIGHT:
                yield _land(*in_flight.popleft())
        while in_flight:
            yield _land(*in_flight.popleft())

    def _calls(
        self, pieces: Sequence[Piece], on_piece: Callable[[int], None] | None
    ) -> Iterator[tuple[jax.Array, list]]:
        """Kernel calls, dispatched: (device array, [(number, spec, first element, row,
        valid slice)]) where ``row`` is the row of a batch (None: the array is one piece's)."""
        batch: list[tuple[int, Piece, int]] = []  # (number, piece, kernel size)
        for number, piece in enumerate(pieces):
            if on_piece is not None:
                on_piece(number)
            spec, start, stop = piece.spec, piece.start, piece.stop
            if not 0 <= start <= stop <= spec.numel:
                raise _failure(spec, ValueError(f"range {start}..{stop} outside {spec.describe()}"))
            if start == stop:
                continue
            if spec.quant is not None:  # a stored part of a quantized weight: by bands
                if batch:
                    yield from _guarded(batch[0][1].spec, self._batches(batch))
                    batch = []
                yield from _guarded(spec, self._quantized(number, piece))
                continue
            size = self.kernel_elems(stop - start)
            # A transform runs as eager ops on each chunk (samplers.finish): not in a batch.
            small = (
                spec.init.elementwise and spec.transform is None and 2 * size <= self.chunk_elems
            )
            if batch and not (
                small
                and (self._signature(spec), size) == self._batch_signature(batch)
                and len(batch) * size < self.chunk_elems
            ):
                yield from _guarded(batch[0][1].spec, self._batches(batch))
                batch = []
            if small:
                batch.append((number, piece, size))
            else:
                yield from _guarded(spec, self._chunked(number, piece, size))
        if batch:
            yield from _guarded(batch[0][1].spec, self._batches(batch))

    def _quantized(self, number: int, piece: Piece) -> Iterator[tuple[np.ndarray, list]]:
        """A stored part of a quantized weight, band by band: each band of whole blocks of
        rows of the logical tensor (a few bands a call, up to ``QUANT_CALL_ELEMS``) drawn
        in float32 and quantized on a device (quant.jitted: only the stored parts reach
        the host), ``QUANT_AHEAD`` bands dispatched ahead of the one handed on, so the
        host and the writer overlap the next bands' kernels. A draw the kernel cannot take
        (a transform, zeroed rows, QR) is drawn chunk by chunk and quantized by numpy
        (quant.kernels) on a worker thread. The other parts a band makes (its scales) are
        kept for the part that follows when they are small, so a weight is drawn once; a
        part asked for alone draws its bands again (the same bytes)."""
        spec, part = piece.spec, piece.spec.quant
        scheme, logical = part.scheme, part.logical
        layout = _part(scheme, part.suffix)
        if layout.role == "constant":  # written whole, never drawn (a shape)
            data = scheme.constant(layout, logical.shape)[piece.start : piece.stop]
            yield data, [(number, spec, piece.start, None, slice(0, data.size))]
            return
        if layout.role == "global":  # one float32 from the whole draw (ct-nvfp4)
            data = np.array([self._global_scale(part)], np.float32)[piece.start : piece.stop]
            yield data, [(number, spec, piece.start, None, slice(0, data.size))]
            return
        per_call = _bands_per_call(scheme, logical.shape)
        per_band = scheme.part_band_elems(layout, logical.shape) * per_call
        band_elems = scheme.band_elems(logical.shape) * per_call
        waiting: collections.deque = collections.deque()

        def emit(band: int, parts) -> tuple[np.ndarray, list]:
            data = self._keep(part, band, parts if isinstance(parts, dict) else parts.result())
            low = max(piece.start, band * per_band)
            high = min(piece.stop, band * per_band + data.size)
            chunk = data[low - band * per_band : high - band * per_band]
            return chunk, [(number, spec, low, None, slice(0, chunk.size))]

        for band in range(piece.start // per_band, -(-piece.stop // per_band)):
            waiting.append((band, self._band(part, band, band_elems)))
            if len(waiting) > QUANT_AHEAD:
                yield emit(*waiting.popleft())
        while waiting:
            yield emit(*waiting.popleft())

    def _band(self, part, band: int, band_elems: int):
        """One band's parts: {suffix: the part's band} when the cache holds this part's
        band, else an object whose ``result()`` gives them: drawn and quantized in one
        jitted call on device ``band % n`` (quant.jitted), or, for a draw that kernel cannot
        take, drawn chunk by chunk and quantized by numpy on the worker thread."""
        logical = part.logical
        found = self._quant_cache.pop((logical.name, part.suffix, band), None)
        if found is not None:
            return {part.suffix: found}
        if self._quant_cache and next(iter(self._quant_cache))[0] != logical.name:
            self._quant_cache.clear()  # another weight's leftovers: bounded to one weight
        start = band * band_elems
        stop = min(logical.numel, start + band_elems)
        if _fusable(logical):
            return self._fused_band(part, band, start, stop)
        if self._quantizer is None:
            self._quantizer = ThreadPoolExecutor(1, thread_name_prefix="weightgen-quantize")
        g = self._global_scale(part) if part.scheme.has_global else None
        return self._quantizer.submit(
            part.scheme.quantize_band, self._drawn_band(logical, start, stop), g
        )

    def _drawn_band(self, logical: TensorSpec, start: int, stop: int) -> np.ndarray:
        """A band drawn as any tensor is, chunk by chunk, on the host in float32."""
        rows = (stop - start) // math.prod(logical.shape[1:])
        values = np.concatenate(list(self.chunks(logical, start, stop)))
        return values.astype(np.float32, copy=False).reshape(rows, *logical.shape[1:])

    def _reference_band(self, part, start: int, stop: int) -> dict[str, np.ndarray]:
        """A band drawn chunk by chunk and quantized by kernels.py: the reference the fused
        kernel equals, and its fallback."""
        g = self._global_scale(part) if part.scheme.has_global else None
        return part.scheme.quantize_band(self._drawn_band(part.logical, start, stop), g)

    def _fused_band(self, part, band: int, start: int, stop: int) -> _FusedBand:
        """Dispatch one band's draw and quantization (quant.jitted), round robin over the
        lanes (a band's bytes do not depend on the device)."""
        from .quant import jitted

        logical, scheme = part.logical, part.scheme
        rows = (stop - start) // math.prod(logical.shape[1:])
        kernel = self._band_kernel(logical, scheme, rows, band % len(self.lanes))
        g = np.float32(self._global_scale(part) if scheme.has_global else 1.0)
        key_data = prng.offset_key_data(self._logical_words(logical), start)
        coefficients, _ = self._elementwise(logical)
        outputs = kernel(key_data, coefficients, jitted.constants(scheme.format.kernel), g)
        if self._copy_early:
            for array in outputs:
                array.copy_to_host_async()
        return _FusedBand(self, part, start, stop, outputs)

    def _band_kernel(self, logical: TensorSpec, scheme, rows: int, device: int) -> Callable:
        """The draw of ``rows`` logical rows and their quantization on device number
        ``device``, compiled once per draw signature, band shape, scheme and device."""
        signature = ("band", self._signature(logical), rows, logical.shape[1:])
        signature += (scheme.name, scheme.params, device)

        def make() -> Callable:
            from .quant import jitted

            _, draw = self._elementwise(logical)
            quantize = jitted.quantizer(scheme)
            shape = (rows, *logical.shape[1:])

            def quantize_band(values, constants, global_scale):
                return quantize(values.astype(np.float32).reshape(shape), constants, global_scale)

            # Placed by their shardings (host arguments go with the call: a separate
            # device_put of the key data cost ~0.5 ms a band). The draw is the chunk
            # kernel's, whole on one device.
            draw_jit = self._kernel(logical, draw, math.prod(shape), device=device)
            quantize_jit = jax.jit(quantize_band, out_shardings=self._on_lane[device])

            def run(key_data, coefficients, constants, global_scale):
                # Two calls, the band between them left on the device (no host copy): in
                # one computation XLA recomputes the draw's tail (erf_inv, two thirds of a
                # normal's cost) in each fusion that reads the values (measured
                # in CPU time on an 18432x7168 weight: 1.5x its draw alone; as two calls,
                # 1.05x; the draw in a lax.cond, materialized once, was no faster).
                values = draw_jit(key_data, coefficients)
                return quantize_jit(values, constants, global_scale)

            return run

        return self._compiled(signature, make)

    def _absmax_kernel(self, logical: TensorSpec, size: int, device: int) -> Callable:
        """The jitted draw of ``size`` elements reduced to their absolute maximum, on
        device number ``device``."""
        signature = ("absmax", self._signature(logical), size, device)

        def make() -> Callable:
            from .quant import jitted

            _, draw = self._elementwise(logical)
            unrolled = self.unrolled

            def run(key_data, coefficients):
                values = draw(prng.wrap(key_data, unrolled=unrolled), coefficients, size)
                return jitted.absmax(values)

            return jax.jit(run, out_shardings=self._on_lane[device])

        return self._compiled(signature, make)

    def _logical_words(self, logical: TensorSpec) -> tuple[int, int]:
        return _cached(
            self._words,
            (logical.seed, logical.fold_in),
            lambda: prng.derive(logical.seed, logical.fold_in),
        )

    def _global_scale(self, part) -> np.float32:
        """A weight's global part (ct-nvfp4): a first pass over the draws of the weights
        that share it (its fused group, or itself), band by band, each band drawn and
        reduced to its absolute maximum on a device (a jitted call; only one float comes
        back), or chunk by chunk for a draw that kernel cannot take. The maximum is exact
        and order-free: the same on any chunk size or device count. Remembered for the
        weight's other parts and the group's other weights."""
        members = part.members
        label = tuple(m.name for m in members)
        found = self._global_scales.get(label)
        if found is None:
            from .quant import kernels

            peaks = [0.0]
            for logical in members:
                if not _fusable(logical):  # chunk by chunk: nothing kept but the maximum
                    for host in self.chunks(logical):
                        peaks.append(kernels.absmax(np.asarray(host, np.float32)))
                    continue
                band_elems = part.scheme.band_elems(logical.shape)
                band_elems *= _bands_per_call(part.scheme, logical.shape)
                words = self._logical_words(logical)
                coefficients, _ = self._elementwise(logical)
                for band, start in enumerate(range(0, logical.numel, band_elems)):
                    size = min(band_elems, logical.numel - start)
                    kernel = self._absmax_kernel(logical, size, band % len(self.lanes))
                    peaks.append(kernel(prng.offset_key_data(words, start), coefficients))
            found = part.scheme.global_scale(max(float(np.asarray(p)) for p in peaks))
            if len(self._global_scales) >= GLOBAL_SCALES_KEPT:
                self._global_scales.clear()
            self._global_scales[label] = found
        return found

    def _keep(self, part, band: int, parts: dict) -> np.ndarray:
        """``part``'s band; the band's other parts cached for their turn when small."""
        logical = part.logical
        for suffix, data in parts.items():
            if suffix != part.suffix and data.nbytes * part.scheme.bands(logical.shape) <= (
                QUANT_CACHE_BYTES * _bands_per_call(part.scheme, logical.shape)
            ):
                self._quant_cache[(logical.name, suffix, band)] = data
        return parts[part.suffix]

    def _batch_signature(self, batch: list[tuple[int, Piece, int]]) -> tuple:
        """The kernel a batch's pieces share: the first piece's signature and size."""
        _, piece, size = batch[0]
        return (self._signature(piece.spec), size)

    def _chunked(self, number: int, piece: Piece, size: int) -> Iterator[tuple[jax.Array, list]]:
        """One piece in chunks of ``size`` elements; the last computed whole (one compiled
        size) and cut on the host."""
        spec, start, stop = piece.spec, piece.start, piece.stop
        if spec.init.elementwise:
            coefficients, draw = self._elementwise(spec)
            kernels = [self._kernel(spec, draw, size)]  # lane 0: the run's device
            if -(-(stop - start) // size) >= LANE_MIN_CHUNKS:
                kernels += [
                    self._kernel(spec, draw, size, device=i) for i in range(1, self._chunk_lanes)
                ]
            finish = samplers.finish(spec)  # a transform's eager ops, if any
            for i, flat_start in enumerate(range(start, stop, size)):
                kernel = kernels[i % len(kernels)]
                chunk = kernel(prng.offset_key_data(piece.words, flat_start), coefficients)
                if finish is not None:
                    chunk = finish(chunk)
                if self._copy_early:
                    chunk.copy_to_host_async()
                yield (
                    chunk,
                    [(number, spec, flat_start, None, slice(0, min(size, stop - flat_start)))],
                )
            return
        key = jax.random.wrap_key_data(np.array(piece.words, np.uint32))
        with jax.default_device(self.devices[0]):
            flat = samplers.whole(spec, key).reshape(-1)
        size = min(size, spec.numel)
        for flat_start in range(start, stop, size):
            chunk, valid = self._slice(flat, flat_start, size=size, stop=stop)
            if self._copy_early:
                chunk.copy_to_host_async()
            yield chunk, [(number, spec, flat_start, None, valid)]

    def _batches(self, batch: list) -> Iterator[tuple[jax.Array, list]]:
        """Small pieces sharing a kernel, as few calls as possible: rows in powers of two
        (a compile each, shared by every later batch of that many), no padding; one row
        alone is an ordinary call."""
        size = batch[0][2]
        done = 0
        while done < len(batch):
            rows = 1 << ((len(batch) - done).bit_length() - 1)
            group = batch[done : done + rows]
            done += rows
            if rows == 1:
                number, piece, _ = group[0]
                yield from self._chunked(number, piece, size)
                continue
            spec = group[0][1].spec
            key_data = prng.offset_key_rows(
                np.array([p.words for _, p, _ in group], np.uint32), [p.start for _, p, _ in group]
            )
            found = [self._elementwise(p.spec) for _, p, _ in group]
            if all(f is found[0] for f in found):  # one parameter set: a model's experts
                coefficients = tuple(np.repeat(c[None], rows, axis=0) for c in found[0][0])
            else:
                coefficients = tuple(np.stack(column) for column in zip(*(c for c, _ in found)))
            kernel = self._kernel(spec, found[0][1], size, rows)
            out = kernel(key_data, coefficients)
            if self._copy_early:
                out.copy_to_host_async()
            yield (
                out,
                [
                    (number, p.spec, p.start, row, slice(0, p.stop - p.start))
                    for row, (number, p, _) in enumerate(group)
                ],
            )

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
        slicer = _cached(
            _COMPILED,
            ("slice", size),  # placed by its argument's sharding
            lambda: jax.jit(lambda a, s: jax.lax.dynamic_slice_in_dim(a, s, size)),
        )
        clamped = min(start, numel - size)  # what dynamic_slice does to a start past the end
        skip = start - clamped
        return slicer(flat, np.int32(start)), slice(skip, skip + valid)


def _bands_per_call(scheme, shape: tuple[int, ...]) -> int:
    """How many of a weight's bands one kernel call takes (consecutive bands are whole
    blocks of rows too: the bytes are the same for any count)."""
    return max(1, QUANT_CALL_ELEMS // max(1, scheme.band_elems(shape)))


def _fusable(logical: TensorSpec) -> bool:
    """Whether a quantized weight's draw can run inside the band kernel: an elementwise
    draw with nothing after it (a transform runs as eager ops, zeroed rows on the host)."""
    return logical.init.elementwise and logical.transform is None and not logical.zero_rows


class _FusedBand:
    """A band dispatched to the fused kernel; ``result()`` lands its parts on the host, or,
    where the kernel says its bytes may differ from kernels.py's (a group's maximum near
    float32's edges, where XLA flushes subnormals: never in a draw), redraws the band the
    reference way."""

    def __init__(self, engine: Engine, part, start: int, stop: int, outputs) -> None:
        self.engine, self.part, self.start, self.stop = engine, part, start, stop
        self.outputs = outputs

    def result(self) -> dict[str, np.ndarray]:
        from .quant import jitted

        exact, *parts = self.outputs
        if not bool(np.asarray(exact)):
            return self.engine._reference_band(self.part, self.start, self.stop)
        return {k: v.reshape(-1) for k, v in jitted.host_parts(self.part.scheme, parts).items()}


def _part(scheme, suffix: str):
    return next(p for p in scheme.format.parts if p.suffix == suffix)


def _cached(cache: dict, token: tuple, make: Callable):
    """``cache[token]``, made on first use; the cache is emptied at 4096 entries, so it
    stays small whatever the plan."""
    found = cache.get(token)
    if found is None:
        if len(cache) >= 4096:
            cache.clear()
        found = cache[token] = make()
    return found


def _token(spec: TensorSpec) -> tuple:
    """What a tensor's kernel and coefficients depend on, besides its shape: a cheap key
    (resolved parameters are numbers, strings and tuples). Parameters go in by repr, not by
    value: -0.0 == 0.0 and 1 == 1.0 == True in Python, but they make different bytes."""
    params = repr(tuple(spec.params.items()))
    transform = spec.transform.as_json() if spec.transform is not None else None
    return (spec.init.name, spec.sample_dtype.name, spec.dtype.name, repr(transform), params)


_ERRORS = (RuntimeError, ValueError, TypeError, NotImplementedError)  # from JAX and XLA


def _guarded(spec: TensorSpec, calls: Iterator) -> Iterator:
    """``calls``, with an error from JAX or XLA while dispatching them named for ``spec``."""
    try:
        yield from calls
    except _ERRORS as exc:
        raise _failure(spec, exc) from exc


def _failure(spec: TensorSpec, exc: BaseException) -> BaseException:
    if isinstance(exc, UsageError):
        return exc
    return GenerationError(f"while generating {spec.describe()}: {exc}")


def _land(array: jax.Array, parts: list) -> list[tuple[int, int, np.ndarray]]:
    """A call's result on the host (read in place on CPU), cut into its pieces."""
    try:
        host = np.asarray(array)
    except _ERRORS as exc:
        raise _failure(parts[0][1], exc) from exc
    landed = []
    for number, spec, flat_start, row, valid in parts:
        part = host if row is None else host[row]
        if valid.stop - valid.start < part.size:
            part = part[valid]
        if spec.zero_rows:
            part = zero_rows(part, flat_start, spec)
        landed.append((number, flat_start, part))
    return landed


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


class Clock(Protocol):
    """What a team's watcher reads (hosts.Team): the generating loop's steps, by range."""

    def began(self, number: int) -> None: ...

    def queued(self, number: int) -> None: ...


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
    clock: Clock | None = None,
) -> None:
    """Generate ``ranges`` (default: every tensor whole, in plan order) into ``sink``.

    Generation and writing overlap: this thread dispatches kernels, a writer thread calls
    ``sink.write(tensor_index, element_offset, chunk)`` and then each tap with the chunk's
    bytes (where hashing happens, off the generating thread). The first error from either
    side stops both; so does ``stop`` (checked between chunks: raises Stopped).
    ``clock``, if given, hears from this thread as it begins dispatching each range and as
    each kernel call's chunks are queued (a peer's watcher sees that the work moves).
    """
    ranges = whole_ranges(plan) if ranges is None else list(ranges)
    specs = [plan.tensors[part.index] for part in ranges]
    # Every key at once, in numpy: per tensor, eager JAX would cost several dispatches.
    keys = prng.derive_words([t.seed for t in specs], [t.fold_in for t in specs]).tolist()
    pieces = [Piece(t, r.start, r.stop, tuple(w)) for t, r, w in zip(specs, ranges, keys)]
    pending: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
    failure: list[BaseException] = []

    def writer() -> None:
        yield_cores()  # generation first: this thread takes what the kernels leave
        while (landed := pending.get()) is not None:
            if failure:
                continue  # drain so the producer never blocks
            try:
                nbytes = 0
                for number, offset, chunk in landed:
                    sink.write(ranges[number].index, offset, chunk)
                    data = as_bytes(chunk)
                    for tap in taps:
                        tap.update(number, data)
                    nbytes += chunk.nbytes
                if on_bytes is not None:
                    on_bytes(nbytes)
            except BaseException as exc:
                failure.append(exc)

    thread = threading.Thread(target=writer, name="weightgen-writer", daemon=True)
    thread.start()
    try:
        for landed in engine.stream(pieces, clock.began if clock is not None else None):
            if failure:
                break
            if stop is not None and stop.is_set():
                raise Stopped
            pending.put(landed)
            if clock is not None:
                clock.queued(landed[-1][0])
    finally:
        pending.put(None)
        thread.join()
    if failure:
        raise failure[0]
    for tap in taps:
        tap.close()
