"""The engine: bounded host memory, compile-once kernels, device selection, the pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import pytest

from weightgen import engine as engine_mod
from weightgen.engine import Engine, select_devices
from weightgen.errors import UsageError
from weightgen.plan import make_tensor

_CHILD = textwrap.dedent(
    """
    import os, sys, weightgen
    weightgen.generate("he-normal", (int(sys.argv[1]), 1024), sys.argv[2],
                       chunk_size=2**20, devices="cpu:0")
    # VmHWM, not getrusage: ru_maxrss survives exec, so a child forked from this (large)
    # test process would report the parent's peak.
    print([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1])
    """
)


def _peak_rss(rows: int, path) -> int:
    """Peak RSS in bytes of a child process that writes a (rows, 1024) float32 tensor."""
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(rows), str(path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout.split()[-1]) * 1024  # kB


@pytest.mark.slow
def test_memory_is_bounded_by_chunks_not_tensor_size(tmp_path):
    """A 512 MiB tensor (128 chunks of 4 MiB) costs the process little more than a 4 MiB one.

    The pipeline holds at most IN_FLIGHT chunks on the device, each with a few chunk-sized
    temporaries while its kernel runs (XLA may run them at once), plus QUEUE_DEPTH queued
    host chunks and one being written: about 20 buffers, 80 MiB. The bound, 192 MiB over
    the small run, allows the allocator twice that; holding the tensor would add 512 MiB.
    """
    small = _peak_rss(1024, tmp_path / "small.safetensors")  # 4 MiB: one chunk
    big = _peak_rss(128 * 1024, tmp_path / "big.safetensors")  # 512 MiB: 128 chunks
    assert (tmp_path / "big.safetensors").stat().st_size > 512 * 2**20
    assert big - small < 192 * 2**20, (small / 2**20, big / 2**20)


def test_kernel_compiles_once_per_family_dtype_and_size(monkeypatch):
    monkeypatch.setattr(engine_mod, "_COMPILED", {})  # none from earlier tests
    engine = Engine(jax.devices()[:1], 256)
    for rows in (5, 9, 33):  # different tensors, sizes past one chunk: the same kernel
        spec = make_tensor("he-normal", (rows, 64), seed=rows)
        list(engine.chunks(spec))
    assert len(engine._kernels) == 1
    (kernel,) = engine._kernels.values()
    assert kernel._cache_size() == 1  # one trace and compile for all chunks and tensors


def test_a_later_engine_reuses_the_kernels_an_earlier_one_compiled(monkeypatch):
    """Kernels are kept per process, by devices, lanes and threefry: a library caller's
    second run (another Engine) neither traces nor compiles again, and gets the same bytes;
    an engine on other devices, or with JAX's threefry, compiles its own."""
    import numpy as np

    monkeypatch.setattr(engine_mod, "_COMPILED", {})
    spec = make_tensor("he-normal", (9, 64), seed=4)
    first = Engine(jax.devices()[:1], 256)
    want = np.concatenate(list(first.chunks(spec)))
    again = Engine(jax.devices()[:1], 256)
    assert np.array_equal(np.concatenate(list(again.chunks(spec))), want)
    (kernel,) = again._kernels.values()
    assert kernel is next(iter(first._kernels.values()))
    assert kernel._cache_size() == 1  # traced and compiled once, by the first engine
    monkeypatch.setenv("WEIGHTGEN_THREEFRY", "jax")
    for other in (Engine(jax.devices()[:2], 256), Engine(jax.devices()[:1], 256)):
        assert np.array_equal(np.concatenate(list(other.chunks(spec))), want)
        (own,) = other._kernels.values()
        assert own is not kernel
    assert len(engine_mod._COMPILED) == 3


def test_small_tensors_share_calls():
    """Consecutive small tensors with one kernel go out as batches of rows (powers of two,
    at most a chunk's worth): 64 tensors of 200 elements in 4 calls, not 64."""
    from weightgen import prng
    from weightgen.engine import Piece

    engine = Engine(jax.devices()[:1], 4096)
    specs = [make_tensor("normal", (10, 20), seed=i) for i in range(64)]
    pieces = [Piece(t, 0, t.numel, prng.derive(t.seed)) for t in specs]
    calls = list(engine.stream(pieces))
    assert [len(call) for call in calls] == [16] * 4  # 256-element rows, 16 to a chunk
    assert [number for call in calls for number, _, _ in call] == list(range(64))
    # 5 more: one batch of 4 and an ordinary call; a new kind of tensor starts a new batch.
    mixed = [*specs[:5], make_tensor("uniform", (10, 20)), specs[0]]
    mixed_pieces = [Piece(t, 0, t.numel, prng.derive(t.seed)) for t in mixed]
    assert [len(call) for call in engine.stream(mixed_pieces)] == [4, 1, 1, 1]


def test_small_tensors_use_power_of_two_kernels():
    engine = Engine(jax.devices(), 2**20)
    assert engine.kernel_elems(5) == 8
    assert engine.kernel_elems(1) == 4  # at least one element per device
    assert engine.kernel_elems(3 * 2**20) == 2**20
    assert engine.chunk_elems % len(jax.devices()) == 0


def test_chunk_size_rounded_to_device_count():
    assert Engine(jax.devices(), 10).chunk_elems == 12


@pytest.mark.parametrize(
    ("spec", "count"), [(None, 4), ("cpu", 4), ("all", 4), ("cpu:1,3", 2), ("CPU:0", 1)]
)
def test_select_devices(spec, count):
    assert len(select_devices(spec)) == count


@pytest.mark.parametrize("spec", ["gpu", "tpu", "cpu:9", "cpu:0,0", "cpu:x"])
def test_select_devices_refuses(spec):
    with pytest.raises(UsageError):
        select_devices(spec)


def test_writer_failure_stops_generation_and_propagates():
    from weightgen import engine as engine_mod
    from weightgen.plan import Plan

    class FailingSink:
        writes = 0

        def write(self, index, offset, chunk):
            self.writes += 1
            raise OSError(28, "No space left on device")

    sink = FailingSink()
    plan = Plan.of([make_tensor("normal", (1000, 100))])
    with pytest.raises(OSError, match="No space"):
        engine_mod.run(Engine(jax.devices()[:1], 1000), plan, sink)
    assert sink.writes == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_writer_thread_yields_the_cores_to_generation():
    """The writer (staging copies, hashing) runs at a lower priority than the thread that
    dispatches the kernels, so that it takes the cores generation leaves idle."""
    import threading

    from weightgen import engine as engine_mod
    from weightgen import writes
    from weightgen.plan import Plan

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    class Recording:
        def __init__(self):
            self.seen: list[int] = []

        def write(self, index, offset, chunk):
            self.seen.append(nice())

    sink = Recording()
    plan = Plan.of([make_tensor("normal", (1000, 100))])
    before = nice()
    engine_mod.run(Engine(jax.devices()[:1], 10_000), plan, sink)
    assert nice() == before  # the generating thread's own priority is left alone
    assert sink.seen and set(sink.seen) == {min(19, before + writes.WRITER_NICE)}


def _cli(args, env_extra, **kwargs):
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": os.pathsep.join(sys.path), **env_extra}
    return subprocess.run([sys.executable, "-m", "weightgen", *args], env=env, **kwargs)


@pytest.mark.parametrize(
    ("flag", "env", "cached"),
    [
        ([], {"WEIGHTGEN_COMPILE_CACHE": "1"}, True),
        (["--no-compile-cache"], {"WEIGHTGEN_COMPILE_CACHE": "1"}, False),
        ([], {"WEIGHTGEN_COMPILE_CACHE": "0"}, False),
    ],
)
def test_persistent_compile_cache_in_xdg_cache_home(tmp_path, flag, env, cached):
    cache = tmp_path / "cache"
    args = ["he-normal", "--shape", "8,8", "-o", str(tmp_path / "w.npz"), "-q", *flag]
    _cli(args, {**env, "XDG_CACHE_HOME": str(cache)}, check=True)
    entries = list((cache / "weightgen" / "jax").glob("*/*")) if cache.exists() else []
    assert bool(entries) == cached


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs a process affinity of two cores or more",
)
def test_compile_cache_kept_apart_per_core_count(tmp_path):
    # XLA's CPU backend bakes the core count into a compiled loop's parallel split; an
    # executable compiled on one core and loaded on more would run on one of them.
    cache = tmp_path / "cache"
    cores = sorted(os.sched_getaffinity(0))
    for allowed in ([cores[0]], cores):
        args = ["he-normal", "--shape", "8,8", "-o", str(tmp_path / "w.npz"), "-q", "--force"]
        _cli(
            args,
            {"WEIGHTGEN_COMPILE_CACHE": "1", "XDG_CACHE_HOME": str(cache)},
            check=True,
            preexec_fn=lambda allowed=allowed: os.sched_setaffinity(0, allowed),
        )
    folders = {p.name: any(p.iterdir()) for p in (cache / "weightgen" / "jax").iterdir()}
    assert folders == {"cores-1": True, f"cores-{len(cores)}": True}


@pytest.mark.slow
@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bar_only_on_a_terminal_stderr(tmp_path, quiet):
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    # A new pty is 0 columns wide; a real terminal is not.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    args = [
        "normal",
        "--shape",
        "8192,8192",
        "--chunk-size",
        "65536",
        "-o",
        str(tmp_path / "w.safetensors"),
        *(["-q"] if quiet else []),
    ]
    proc = _cli(args, {}, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        seen += data
    os.close(master)
    assert proc.returncode == 0 and proc.stdout == b""
    has_bar = b"%|" in seen and b"B/s" in seen
    assert has_bar != quiet, seen[-300:]


_LANES_CHILD = textwrap.dedent(
    """
    import json, os, sys
    if sys.argv[3] == "one-core":
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
    import weightgen
    from weightgen import engine
    seen = []
    init = engine.Engine.__init__
    def record(self, *args, **kwargs):
        init(self, *args, **kwargs)
        seen.append([[d.id for d in self.devices], [d.id for d in self.lanes], self._chunk_lanes])
    engine.Engine.__init__ = record
    manifest, hashes = sys.argv[4] == "manifest", sys.argv[4] != "-"
    weightgen.run_spec(sys.argv[1], sys.argv[2], manifest=manifest, hashes=hashes)
    try:
        engine.select_devices("cpu:1")
        refused = False
    except weightgen.UsageError:
        refused = True
    print(json.dumps({"engines": seen, "cpu:1 refused": refused}))
    """
)


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs a process affinity of two cores or more",
)
@pytest.mark.parametrize(
    ("quantize", "hashing", "cores", "expected"),
    [
        # (the run's devices, its lanes, how many lanes its chunks alternate over)
        ("fp8-block", "-", "all", [[0], [0, 1], 1]),  # a second lane for the bands only
        (None, "manifest", "all", [[0], [0, 1], 2]),  # hashing: chunks alternate too
        (None, "digests", "all", [[0], [0, 1], 2]),  # the result's digests (--json) hash too
        ("fp8-block", "manifest", "all", [[0], [0, 1], 2]),
        (None, "-", "all", [[0], [0], 1]),  # neither: one device, as always
        ("fp8-block", "manifest", "one-core", [[0], [0], 1]),  # one core: nothing to overlap
    ],
)
def test_a_second_cpu_lane_where_a_run_quantizes_or_hashes(
    tmp_path, quantize, hashing, cores, expected
):
    """A process left to JAX's default CPU device count (no XLA_FLAGS) that quantizes or
    hashes (a manifest, or the digests the library returns and --json prints) adds one CPU
    device (engine._LANES): a quantized weight's bands alternate over both, and a hashing
    run's chunks too; --devices never sees the added one. The bytes (and the manifest's
    digests) are those of this test process's run on its 4 devices."""
    import json

    tensors = {
        "w": {"init": "he-normal", "shape": [384, 640]},  # 3 bands of 128 rows
        # 8 chunks of 2**19: alternated (engine.LANE_MIN_CHUNKS)
        "v": {"init": "truncated-normal", "shape": [4096, 1024], "dtype": "bfloat16"},
        "norm": {"init": "ones", "shape": [640], "dtype": "bfloat16"},
    }
    document = {"seed": 5, "tensors": tensors}
    if quantize:
        tensors["w"]["quantize"] = quantize
        document["quantize"] = {"format": quantize}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(document))
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": os.pathsep.join(sys.path)}
    manifest = hashing == "manifest"
    args = [str(spec), str(tmp_path / "child.safetensors"), cores, hashing]
    done = subprocess.run(
        [sys.executable, "-c", _LANES_CHILD, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["engines"] == [expected]
    assert report["cpu:1 refused"]  # device 1, when there is one, is the second lane
    import weightgen

    here = tmp_path / "here.safetensors"
    weightgen.run_spec(str(spec), here, manifest=manifest, chunk_size=2**19)
    assert (tmp_path / "child.safetensors").read_bytes() == here.read_bytes()
    if manifest:
        digests = [
            json.loads(p.read_text())["tensors"] for p in sorted(tmp_path.glob("*.manifest.json"))
        ]
        assert len(digests) == 2 and digests[0] == digests[1]
