#!/usr/bin/env python3
"""The GPU check: weightgen on a GPU, against JAX on the same GPU, in a few minutes.

Run from the repository root on a machine with a GPU and a CUDA jax (nothing to install: jax,
numpy, click, safetensors, h5py, tqdm and ml_dtypes suffice; without blake3 the model is
written with --no-manifest)::

    PYTHONPATH=. python3 scripts/gpu_check.py --out gpu_check.json

Sections (``--only`` picks some):

- ``env``: versions, devices, the threefry weightgen uses there, the JAX options it sets (x64
  for float64, the persistent compile cache) and whether the cache works on this backend;
- ``parity``: a sample of the parity matrix (initializers x dtypes, bfloat16, float16,
  float32, float64, complex64, orthogonal, zero_rows, a batch of small tensors) generated on
  the device, each against ``jax.nn.initializers`` on the same device, with JAX's threefry
  (the default off CPU) and with weightgen's unrolled one;
- ``cpu``: whether those bytes equal the CPU's (both computed here, in this process), and
  whether JAX's own GPU and CPU results agree: reported, not assumed;
- ``rate``: generation of one bfloat16 tensor per size (default 4 and 16 GiB) into a null sink
  (no I/O) and to a safetensors file on disk, beside a disk floor (the same bytes of random
  data, one fdatasync);
- ``hf``: ``weightgen hf`` of the Llama-3-8B config (16 GB bfloat16) to disk, as a separate
  process: wall time and peak RSS.

It prints one table and writes it as JSON (``--out``). The exit status is 1 if any parity case
differs from JAX on the same device, else 0. Without a GPU the same steps run on the CPU;
``--small`` shrinks every size (the test suite runs it that way).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG_8B = ROOT / "tests" / "data" / "hf_configs" / "llama-3-8b.json"
SECTIONS = ("env", "parity", "cpu", "rate", "hf")
GiB = 2**30

# (init, params, shape, dtype, sample dtype or None, zero rows): the parity sample.
CASES = [
    ("normal", {"stddev": 0.02}, (257, 1031), "float32", None, ()),
    ("normal", {"stddev": 0.02}, (257, 1031), "bfloat16", None, ()),
    ("normal", {"stddev": 0.02}, (257, 1031), "bfloat16", "float32", ()),
    ("truncated-normal", {"stddev": 1.5, "lower": -1.0, "upper": 3.0}, (513, 77), "float16",
     None, ()),
    ("truncated-normal", {}, (513, 77), "bfloat16", "float32", ()),
    ("he-normal", {}, (3, 3, 64, 129), "float32", None, ()),
    ("he-uniform", {}, (1031, 257), "bfloat16", None, ()),
    ("glorot-normal", {}, (1031, 257), "float16", None, ()),
    ("lecun-uniform", {}, (129, 1031), "float32", None, ()),
    ("uniform", {"scale": 3.0}, (100_003,), "float32", None, ()),
    ("variance-scaling", {"scale": 2.0, "mode": "fan_avg", "distribution": "truncated_normal"},
     (257, 129), "complex64", None, ()),
    ("normal", {}, (4099, 31), "float64", None, ()),
    ("normal", {"stddev": 0.02}, (1000, 64), "bfloat16", "float32", (0, 999)),
    ("ones", {}, (4099,), "bfloat16", None, ()),
    ("orthogonal", {}, (512, 384), "float32", None, ()),
    ("orthogonal", {"scale": 2.0}, (256, 256), "bfloat16", "float32", ()),
]  # fmt: skip


class Table:
    """Rows of (section, check, result, detail), printed once and written as JSON."""

    def __init__(self):
        self.rows: list[dict] = []
        self.failed = False

    def add(self, section: str, check: str, result, detail: str = "", *, fail: bool = False):
        self.rows.append({"section": section, "check": check, "result": result, "detail": detail})
        self.failed |= fail
        print(f"  {section:7} {check:52} {_text(result):>12}  {detail}", flush=True)

    def render(self) -> str:
        widths = [7, 52, 12]
        lines = [
            f"{'section':{widths[0]}} | {'check':{widths[1]}} | {'result':>{widths[2]}} | detail",
            "-" * 100,
        ]
        for r in self.rows:
            lines.append(
                f"{r['section']:{widths[0]}} | {r['check']:{widths[1]}} | "
                f"{_text(r['result']):>{widths[2]}} | {r['detail']}"
            )
        return "\n".join(lines)


def _text(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


# --- helpers ------------------------------------------------------------------------------


def _x64(enabled: bool):
    import contextlib

    import jax

    @contextlib.contextmanager
    def switch():
        before = jax.config.jax_enable_x64
        jax.config.update("jax_enable_x64", enabled)
        try:
            yield
        finally:
            jax.config.update("jax_enable_x64", before)

    return switch()


def _spec(case):
    from weightgen.plan import make_tensor

    init, params, shape, dtype, sample, rows = case
    return make_tensor(
        init, shape, params=params, dtype=dtype, sample_dtype=sample, seed=7, zero_rows=list(rows)
    )


def _label(case) -> str:
    init, _, shape, dtype, sample, rows = case
    text = f"{init} {'x'.join(map(str, shape))} {dtype}"
    if sample:
        text += f" (drawn {sample})"
    if rows:
        text += " zero_rows"
    return text


def reference(spec, device):
    """``jax.nn.initializers`` itself on ``device`` (the parity contract's right side)."""
    import jax
    import numpy as np

    builder = getattr(jax.nn.initializers, spec.init.jax_name)
    init = builder(**spec.params) if spec.init.jax_builder else builder
    with _x64(spec.needs_x64), jax.default_device(device):
        key = jax.random.key(spec.seed)
        if spec.fold_in is not None:
            key = jax.random.fold_in(key, spec.fold_in)
        out = init(key, spec.shape, spec.sample_dtype.numpy)
        if spec.sample_dtype != spec.dtype:
            out = out.astype(spec.dtype.numpy)
        if spec.zero_rows:
            out = out.at[np.array(spec.zero_rows)].set(0)
        return np.asarray(out)


def generated(spec, devices, *, chunk=None, unrolled=None):
    """weightgen's engine on ``devices``, reassembled; ``unrolled`` forces a threefry."""
    import numpy as np

    from weightgen.engine import Engine

    engine = Engine(devices, chunk)
    if unrolled is not None:
        engine.unrolled = unrolled
    with _x64(spec.needs_x64):
        parts = list(engine.chunks(spec))
    return np.concatenate([*parts, np.empty(0, spec.dtype.numpy)]).reshape(spec.shape)


def _same(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _differ(a, b) -> str:
    """How two arrays of one dtype differ: elements and the largest difference."""
    import numpy as np

    if a.shape != b.shape or a.dtype != b.dtype:
        return f"{a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    bits = a.view(np.uint8).reshape(a.size, -1) != b.view(np.uint8).reshape(b.size, -1)
    count = int(bits.any(axis=1).sum())
    wide = np.complex128 if a.dtype.kind == "c" else np.float64
    largest = float(np.max(np.abs(a.astype(wide) - b.astype(wide)))) if count else 0.0
    return f"{count} of {a.size} elements differ (largest difference {largest:.3g})"


def _small_plan():
    """Many small tensors that go out as batched calls (rows of one vmapped kernel)."""
    from weightgen.plan import Plan, make_tensor, name_fold_in

    kinds = [
        ("normal", "bfloat16", "float32"),
        ("he-normal", "float32", None),
        ("truncated-normal", "float16", None),
        ("uniform", "bfloat16", None),
    ]
    specs = []
    for i in range(64):
        init, dtype, sample = kinds[(i // 16) % len(kinds)]
        name = f"experts.{i:02d}.w"
        specs.append(
            make_tensor(
                init,
                (32, 24 + i % 3),
                dtype=dtype,
                sample_dtype=sample,
                seed=5,
                name=name,
                fold_in=name_fold_in(name),
            )
        )
    return Plan.of(specs)


def _run_plan(plan, devices, *, unrolled=None):
    import numpy as np

    from weightgen import engine as engine_mod

    written: dict[int, list] = {}

    class Memory:
        def write(self, index, offset, chunk):
            written.setdefault(index, []).append((offset, np.array(chunk)))

    engine = engine_mod.Engine(devices)
    if unrolled is not None:
        engine.unrolled = unrolled
    engine_mod.run(engine, plan, Memory())
    out = []
    for index, spec in enumerate(plan.tensors):
        parts = [chunk for _, chunk in sorted(written[index], key=lambda p: p[0])]
        out.append(np.concatenate(parts).reshape(spec.shape))
    return out


# --- sections -----------------------------------------------------------------------------


def env_section(table, devices, args) -> None:
    import jax
    import jaxlib

    from weightgen import engine, prng

    table.add(
        "env",
        "python / jax / jaxlib",
        platform.python_version(),
        f"jax {jax.__version__}, jaxlib {jaxlib.__version__}",
    )
    table.add(
        "env",
        "devices",
        f"{len(devices)} {devices[0].platform}",
        ", ".join(sorted({d.device_kind for d in devices})),
    )
    table.add(
        "env",
        "threefry on these devices",
        "unrolled" if prng.unrolled_for(devices[0].platform) else "jax",
        "weightgen's unrolled form on CPU; JAX's threefry2x32_p elsewhere "
        f"(WEIGHTGEN_THREEFRY={os.environ.get(prng.THREEFRY_ENV, 'auto')})",
    )
    try:
        import blake3  # noqa: F401

        have = True
    except ImportError:
        have = False
    table.add(
        "env",
        "blake3 installed (manifests)",
        have,
        "" if have else "the model is written with --no-manifest",
    )
    cache = Path(args.workdir) / "compile-cache"
    os.environ["XDG_CACHE_HOME"] = str(cache)
    engine.configure_jax(x64=False, compile_cache=True)
    spec = _spec(CASES[0])
    generated(spec, devices)
    entries = list((cache / "weightgen" / "jax").glob("*"))
    table.add(
        "env",
        "persistent compile cache written",
        bool(entries),
        f"{len(entries)} entries under {cache}",
    )
    table.add(
        "env",
        "jax_enable_x64 after configure_jax(x64=False)",
        bool(jax.config.jax_enable_x64) is False,
        "switched on only for 64-bit dtypes",
    )


def parity_section(table, devices, cpu, small_cases) -> dict:
    """Each case on the device against JAX on the device; keeps the arrays for ``cpu``."""
    kept = {}
    device = devices[0]
    for case in small_cases:
        spec = _spec(case)
        label = _label(case)
        want = reference(spec, device)
        got = generated(spec, devices)
        ok = _same(got, want)
        detail = "" if ok else _differ(got, want)
        if ok and spec.init.elementwise:
            for name, kwargs in (
                ("chunks of 1,000", {"chunk": 1000}),
                ("unrolled threefry", {"unrolled": True}),
                ("JAX's threefry", {"unrolled": False}),
            ):
                other = generated(spec, devices, **kwargs)
                if not _same(other, want):
                    ok, detail = False, f"{name}: {_differ(other, want)}"
                    break
        table.add("parity", label, ok, detail or "= JAX on the same device", fail=not ok)
        kept[label] = (spec, got, want)
    plan = _small_plan()
    wants = [reference(t, device) for t in plan.tensors]
    for unrolled in (False, True):
        gots = _run_plan(plan, devices, unrolled=unrolled)
        bad = [t.name for t, g, w in zip(plan.tensors, gots, wants) if not _same(g, w)]
        what = "unrolled" if unrolled else "JAX's"
        table.add(
            "parity",
            f"64 small tensors in batched calls ({what} threefry)",
            not bad,
            f"differ: {', '.join(bad[:3])}" if bad else "= JAX on the same device",
            fail=bool(bad),
        )
    return kept


def cpu_section(table, devices, cpu, kept) -> None:
    if devices[0].platform == "cpu":
        table.add("cpu", "device bytes = CPU bytes", "n/a", "the device is the CPU")
        return
    for label, (spec, got, want) in kept.items():
        on_cpu = generated(spec, cpu[:1])
        jax_cpu = reference(spec, cpu[0])
        same = _same(got, on_cpu)
        detail = "" if same else _differ(got, on_cpu)
        jax_same = _same(want, jax_cpu)
        detail = (detail + "; " if detail else "") + (
            "JAX's own GPU and CPU agree" if jax_same else f"JAX itself: {_differ(want, jax_cpu)}"
        )
        if not _same(on_cpu, jax_cpu):
            detail += "; weightgen on CPU differs from JAX on CPU!"
        table.add("cpu", f"{label}: GPU = CPU", same, detail)


def _null_run(spec, devices):
    from weightgen import engine as engine_mod
    from weightgen.plan import Plan

    class Null:
        def write(self, index, offset, chunk):
            pass

    engine = engine_mod.Engine(devices)
    started = time.perf_counter()
    engine_mod.run(engine, Plan.of([spec]), Null())
    return time.perf_counter() - started


def _disk_floor(nbytes: int, path: Path) -> float:
    """The same number of incompressible bytes, written with one fdatasync (bench.py's)."""
    pool = os.urandom(64 << 20)
    block = 16 << 20
    started = time.perf_counter()
    with open(path, "wb") as f:
        for start in range(0, nbytes, block):
            offset = (start // block * 7919 * 4096) % (len(pool) - block)
            f.write(memoryview(pool)[offset : offset + min(block, nbytes - start)])
        f.flush()
        os.fdatasync(f.fileno())
    seconds = time.perf_counter() - started
    path.unlink()
    return seconds


def rate_section(table, devices, sizes, workdir: Path, device_arg) -> tuple[int, float]:
    """Rates per size; returns the disk floor of the largest: (bytes, seconds)."""
    import weightgen
    from weightgen.plan import make_tensor

    measured = (0, 0.0)
    for size in sizes:
        elements = int(size * GiB) // 2
        cols = 65536 if elements % 65536 == 0 and elements >= 65536 else 1
        shape = (elements // cols, cols)
        spec = make_tensor(
            "normal",
            shape,
            params={"stddev": 0.02},
            dtype="bfloat16",
            sample_dtype="float32",
            seed=1,
        )
        nbytes = spec.nbytes
        tag = f"{nbytes / GiB:g} GiB bf16" if nbytes >= GiB else f"{nbytes >> 20} MiB bf16"
        _null_run(
            make_tensor(
                "normal",
                (4096, 4096),
                params={"stddev": 0.02},
                dtype="bfloat16",
                sample_dtype="float32",
            ),
            devices,
        )  # compile first
        seconds = _null_run(spec, devices)
        table.add(
            "rate",
            f"{tag}, no I/O",
            f"{nbytes / seconds / 1e9:.2f} GB/s",
            f"{seconds:.2f} s, {elements / seconds / 1e9:.2f} G elements/s",
        )
        if devices[0].platform != "cpu" and size == sizes[0]:
            before = os.environ.get("WEIGHTGEN_THREEFRY")
            os.environ["WEIGHTGEN_THREEFRY"] = "unrolled"
            try:
                seconds = _null_run(spec, devices)
            finally:
                if before is None:
                    del os.environ["WEIGHTGEN_THREEFRY"]
                else:
                    os.environ["WEIGHTGEN_THREEFRY"] = before
            table.add(
                "rate",
                f"{tag}, no I/O, weightgen's unrolled threefry",
                f"{nbytes / seconds / 1e9:.2f} GB/s",
                f"{seconds:.2f} s",
            )
        out = workdir / "rate.safetensors"
        started = time.perf_counter()
        weightgen.generate(
            "normal",
            shape,
            out,
            params={"stddev": 0.02},
            dtype="bfloat16",
            sample_dtype="float32",
            seed=1,
            hashes=False,
            force=True,
            devices=device_arg,
        )
        seconds = time.perf_counter() - started
        out.unlink()
        floor = _disk_floor(nbytes, workdir / "floor.bin")
        measured = max(measured, (nbytes, floor))
        table.add(
            "rate",
            f"{tag}, to disk (safetensors, fsync)",
            f"{nbytes / seconds / 1e9:.2f} GB/s",
            f"{seconds:.2f} s; disk floor {nbytes / floor / 1e9:.2f} GB/s "
            f"({floor / seconds:.2f}x of it)",
        )
    return measured


def _tiny_config(workdir: Path) -> Path:
    """Llama-3-8B's config, shrunk (for --small): the same family and code path."""
    config = json.loads(CONFIG_8B.read_text())
    config.update(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=4096,
    )
    path = workdir / "tiny-llama.json"
    path.write_text(json.dumps(config))
    return path


# The CLI, reporting its own peak RSS (VmHWM) at exit: ru_maxrss from wait4 would carry this
# (large) process's peak, since it survives fork and exec.
CLI_WITH_PEAK = """
import atexit, sys
path = sys.argv.pop(1)
def peak():
    with open("/proc/self/status") as f:
        line = [l for l in f if l.startswith("VmHWM")][0]
    with open(path, "w") as out:
        out.write(line.split()[1])
atexit.register(peak)
sys.argv[0] = "weightgen"
from weightgen.cli import main
main(sys.argv[1:])
"""


def hf_section(
    table, config: Path, workdir: Path, device_arg, manifest: bool, floor=(0, 0.0)
) -> None:
    """``weightgen hf`` as its own process; ``floor`` (bytes, seconds): a disk floor measured
    already, reused when it wrote at least half the model's bytes."""
    out = workdir / "model"
    peak_file = workdir / "peak.txt"
    argv = [sys.executable, "-c", CLI_WITH_PEAK, str(peak_file)]
    argv += ["hf", str(config), "-o", str(out), "--force", "-q"]
    if device_arg:
        argv += ["--devices", device_arg]
    if not manifest:
        argv.append("--no-manifest")
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:  # not a pipe: a chatty child would fill it
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        stderr.seek(0)
        err = stderr.read().decode(errors="replace").strip()
    code = os.waitstatus_to_exitcode(status)
    name = config.name
    if code != 0:
        table.add(
            "hf", f"weightgen hf {name}", "FAILED", err.splitlines()[-1] if err else "", fail=True
        )
        return
    nbytes = sum(p.stat().st_size for p in out.iterdir())
    shutil.rmtree(out)
    if floor[0] >= nbytes / 2:
        floor_rate = floor[0] / floor[1]
    else:
        floor_rate = nbytes / _disk_floor(nbytes, workdir / "floor.bin")
    table.add(
        "hf",
        f"weightgen hf {name}, wall",
        f"{seconds:.1f} s",
        f"{nbytes / 1e9:.2f} GB at {nbytes / seconds / 1e9:.2f} GB/s, "
        f"{'with' if manifest else 'without'} manifest; disk floor "
        f"{floor_rate / 1e9:.2f} GB/s ({nbytes / seconds / floor_rate:.2f}x of it)",
    )
    try:
        peak = f"{int(peak_file.read_text()) / 1024:.0f} MiB"
    except (OSError, ValueError):
        peak = f"<= {usage.ru_maxrss / 1024:.0f} MiB"  # no /proc: wait4's (an upper bound)
    table.add("hf", f"weightgen hf {name}, peak RSS", peak, "VmHWM of the process")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the table as JSON here")
    parser.add_argument("--devices", default=None, help="weightgen --devices (default: JAX's)")
    parser.add_argument("--small", action="store_true", help="small sizes (CPU, tests)")
    parser.add_argument("--sizes", default=None, help="GiB per rate case (default 4,16)")
    parser.add_argument("--config", default=None, help="the hf config (default Llama-3-8B)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=", ".join(SECTIONS))
    parser.add_argument("--workdir", default=None, help="where files go (default: ./)")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    sizes = [
        float(s) for s in (args.sizes or ("0.03125,0.0625" if args.small else "4,16")).split(",")
    ]
    base = Path(args.workdir or ".").resolve()
    work = Path(tempfile.mkdtemp(prefix="gpu-check-", dir=base))
    args.workdir = str(work)
    started = time.perf_counter()
    table = Table()
    try:
        sys.path.insert(0, str(ROOT))
        from weightgen import engine
        from weightgen.memory import tune_allocator

        tune_allocator()
        import jax

        devices = engine.select_devices(args.devices)
        cpu = jax.devices("cpu")
        print(f"weightgen GPU check on {len(devices)} {devices[0].platform} device(s)", flush=True)
        if "env" in chosen:
            env_section(table, devices, args)
        else:
            engine.configure_jax(x64=False, compile_cache=False)
        cases = CASES
        if args.small:
            cases = [c for i, c in enumerate(CASES) if i % 3 == 0 or c[0] == "orthogonal"]
        kept = parity_section(table, devices, cpu, cases) if {"parity", "cpu"} & set(chosen) else {}
        if "cpu" in chosen:
            cpu_section(table, devices, cpu, kept)
        floor = (0, 0.0)
        if "rate" in chosen:
            floor = rate_section(table, devices, sizes, work, args.devices)
        if "hf" in chosen:
            try:
                import blake3  # noqa: F401

                manifest = True
            except ImportError:
                manifest = False
            config = (
                Path(args.config)
                if args.config
                else (_tiny_config(work) if args.small else CONFIG_8B)
            )
            hf_section(table, config, work, args.devices, manifest, floor)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    print(table.render())
    print(
        f"\n{seconds:.0f} s in all; this process's peak RSS {peak:.0f} MiB; "
        f"{'SOME PARITY CASE FAILED' if table.failed else 'every parity case = JAX'}"
    )
    if args.out:
        import jax

        payload = {
            "meta": {
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "python": platform.python_version(),
                "jax": jax.__version__,
                "backend": jax.default_backend(),
                "seconds": round(seconds, 1),
                "small": args.small,
                "failed": table.failed,
                "device": jax.devices()[0].device_kind,
            },
            "rows": table.rows,
        }
        Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
