#!/usr/bin/env python3
"""make bench: weightgen against the hand-written anchors, side by side, in one run.

Every measurement is a whole process (imports, compile, generation, write), started by this
script; wall time is the median of --runs runs and peak RSS comes from wait4(). Ratios are
taken between numbers measured here, in the same run, since the machines are shared and noisy.

Each write is also set against the host's two floors, measured in the same run: the same
command with its output sent to /dev/null (generation alone) and the disk (O_DIRECT, and the
page cache with fdatasync); the target is the write within 1.15x of the slower floor.

Sections (``--only`` picks some): ``tensors`` (one he-normal tensor against the scripts
people write; generation alone with weightgen's unrolled threefry and with JAX's own,
``WEIGHTGEN_THREEFRY=jax``), ``hashing`` (a manifest's cost; verify against one sha256 pass),
``models`` (whole Hugging Face models against transformers), ``many`` (20,000 small tensors
against 20 large ones of the same bytes; a 70,000-tensor spec), ``hosts`` (several processes
on jax.distributed, scripts/bench_hosts.py); or ``floors`` alone, the quick subset: only the
rows set against the floors (1 GiB, the 1B spec, the 1B and 8B models; ``--quick``: no 8B).
Writes bench/results.json, bench/results.md and bench/throughput.png.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench"
CONFIGS = ROOT / "tests" / "data" / "hf_configs"
PY = sys.executable
GiB = 2**30
SECTIONS = ("tensors", "cores", "hashing", "models", "many", "hosts")
# "floors" (not run by default): only what the host's two floors are compared with: 1 GiB
# f32, the 1B spec with and without its manifest, the 1B and 8B models, each with the same
# command to /dev/null and the disk floors; no anchors. With --quick, no 8B: ~2 minutes.
FLOORS = "floors"
QUIET_WAIT = 60.0  # seconds a run waits at most for the rest of the machine to go quiet
QUIET_BUDGET = 600.0  # ...and the whole benchmark, after which runs start at once
_WAITED = 0.0
CORES_CASE = "cores: 1 process"
CORES_RATE = "generation"
CORES_COMMAND = "the command to /dev/null"
SAME_TO_NULL = "the same command to /dev/null"
DISK_TOOL = "floor: disk write + fdatasync"
DISK_DIRECT_TOOL = "floor: disk write, O_DIRECT + fsync"

# The anchors: what people write today. Each is a standalone script: argv = shape, dtype, out.
ANCHORS = {
    "jax+safetensors": """
        import sys, jax, jax.numpy as jnp, numpy as np
        shape, dtype, out = tuple(map(int, sys.argv[1].split(","))), sys.argv[2], sys.argv[3]
        w = jax.nn.initializers.he_normal()(jax.random.key(0), shape, jnp.dtype(dtype))
        if dtype == "bfloat16":  # safetensors.numpy cannot save bfloat16; the flax writer can
            from safetensors.flax import save_file
            save_file({"weight": w}, out)
        else:
            from safetensors.numpy import save_file
            save_file({"weight": np.asarray(w)}, out)
    """,
    "numpy+safetensors": """
        import sys, numpy as np
        from safetensors.numpy import save_file
        shape, out = tuple(map(int, sys.argv[1].split(","))), sys.argv[3]
        rng = np.random.default_rng(0)
        std = np.float32(np.sqrt(2.0 / shape[-2]))
        w = rng.standard_normal(shape, dtype=np.float32)  # untruncated
        w *= std
        save_file({"weight": w}, out)
    """,
    "torch kaiming_normal_": """
        import sys, torch
        from safetensors.torch import save_file
        shape, out = tuple(map(int, sys.argv[1].split(","))), sys.argv[3]
        w = torch.empty(shape, dtype=getattr(torch, sys.argv[2]))
        torch.nn.init.kaiming_normal_(w)  # untruncated
        save_file({"weight": w}, out)
    """,
    "torch trunc_normal_": """
        import sys, torch
        from safetensors.torch import save_file
        shape, out = tuple(map(int, sys.argv[1].split(","))), sys.argv[3]
        w = torch.empty(shape, dtype=getattr(torch, sys.argv[2]))
        torch.nn.init.trunc_normal_(w, std=(2.0 / shape[-2]) ** 0.5)
        save_file({"weight": w}, out)
    """,
}

# The generation floor: weightgen's engine with no I/O (chunks are produced and dropped).
FLOOR = """
    import sys, time
    from weightgen import engine
    from weightgen.plan import Plan, make_tensor
    shape, dtype = tuple(map(int, sys.argv[1].split(","))), sys.argv[2]
    engine.configure_jax(x64=False)
    spec = make_tensor("he-normal", shape, dtype=dtype)
    class Null:
        def write(self, index, offset, chunk): pass
    engine.run(engine.Engine(engine.select_devices(None)), Plan.of([spec]), Null())
"""

# Generation alone with JAX's threefry2x32_p and with weightgen's unrolled form, in one process:
# argv = shape, dtype, runs, devices; prints {choice: [seconds per run]}.
RATE = """
    import json, os, sys, time
    from weightgen import engine
    from weightgen.plan import Plan, make_tensor
    shape, dtype = tuple(map(int, sys.argv[1].split(","))), sys.argv[2]
    runs, devices = int(sys.argv[3]), sys.argv[4] or None
    choices = sys.argv[5:] or ["jax", "unrolled"]
    engine.configure_jax(x64=False)
    class Null:
        def write(self, index, offset, chunk): pass
    plan = Plan.of([make_tensor("he-normal", shape, dtype=dtype)])
    engines = {}
    for choice in choices:
        os.environ["WEIGHTGEN_THREEFRY"] = choice  # read when an engine is made
        engines[choice] = engine.Engine(engine.select_devices(devices))
        small = Plan.of([make_tensor("he-normal", (4096, 1024), dtype=dtype)])
        engine.run(engines[choice], small, Null())  # compile
    seconds = {choice: [] for choice in engines}
    cpu = {choice: [] for choice in engines}  # this process's CPU seconds, every thread
    for _ in range(runs):
        for choice, eng in engines.items():
            started, used = time.perf_counter(), time.process_time()
            engine.run(eng, plan, Null())
            seconds[choice].append(time.perf_counter() - started)
            cpu[choice].append(time.process_time() - used)
    print(json.dumps({**seconds, "cpu": cpu}))
"""
RATE_TOOLS = {
    "jax": "generation rate, JAX's threefry",
    "unrolled": "generation rate, weightgen's unrolled threefry",
}

# The disk: the same number of bytes, incompressible as weights are (a disk or a virtual
# disk may write zeros far faster), with one fdatasync at the end.
DISK = """
    import os, sys
    nbytes, out = int(sys.argv[1]), sys.argv[2]
    pool = os.urandom(64 << 20)
    block = 16 << 20
    with open(out, "wb") as f:
        for start in range(0, nbytes, block):
            offset = (start // block * 7919 * 4096) % (len(pool) - block)
            f.write(memoryview(pool)[offset : offset + min(block, nbytes - start)])
        f.flush()
        os.fdatasync(f.fileno())
"""

# The disk as weightgen writes it (dd oflag=direct): O_DIRECT from page-aligned buffers, 8 MiB
# blocks, one fsync; buffered writes where the filesystem refuses O_DIRECT.
DISK_DIRECT = """
    import mmap, os, sys
    nbytes, out = int(sys.argv[1]), sys.argv[2]
    block = 8 << 20
    pool = mmap.mmap(-1, 64 << 20)  # anonymous maps are page-aligned
    pool[:] = os.urandom(len(pool))
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        direct = os.open(out, os.O_WRONLY | getattr(os, "O_DIRECT", 0))
    except OSError:
        direct = fd
    for start in range(0, nbytes, block):
        offset = (start // block * 7919 * 4096) % (len(pool) - block)
        size = min(block, nbytes - start)
        data = memoryview(pool)[offset : offset + size]
        try:
            written = os.pwrite(direct if size % 4096 == 0 else fd, data, start)
        except OSError:  # EINVAL: no O_DIRECT here
            direct = fd
            written = os.pwrite(fd, data, start)
        assert written == size
    os.fsync(fd)
"""

# transformers' own way to a model folder: the whole model in memory, then save_pretrained.
TRANSFORMERS = """
    import sys, torch, transformers
    config = transformers.AutoConfig.from_pretrained(sys.argv[1])
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=getattr(torch, sys.argv[2]))
    model.save_pretrained(sys.argv[3])
"""

# One sha256 pass over every file of an output, on one thread (what sha256sum does).
SHA256 = """
    import hashlib, os, sys
    target = sys.argv[1]
    names = sorted(os.listdir(target)) if os.path.isdir(target) else [""]
    for name in names:
        digest = hashlib.sha256()
        with open(os.path.join(target, name) if name else target, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
"""


@dataclass
class Row:
    case: str
    tool: str
    nbytes: int
    elements: int = 0
    walls: list[float] = field(default_factory=list)
    peak_rss: int = 0
    note: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)


def _others_cpu() -> float:
    """CPU seconds used so far by every process but this one and its children (Linux)."""
    me, total = os.getpid(), 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == me:  # a child of ours (a finished run's leftovers)
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit: float = 0.05, span: float = 0.5, timeout: float = QUIET_WAIT) -> None:
    """Until the rest of the machine used less than ``limit`` of a core over ``span``
    seconds, or ``timeout`` passed: the project's machines are shared, and a run beside
    someone's test suite measures the suite."""
    global _WAITED
    if not os.path.isdir("/proc/self") or _WAITED >= QUIET_BUDGET:
        return
    started = time.monotonic()
    end = started + min(timeout, QUIET_BUDGET - _WAITED)
    try:
        while time.monotonic() < end:
            before = _others_cpu()
            time.sleep(span)
            if _others_cpu() - before < limit * span:
                return
    finally:
        _WAITED += time.monotonic() - started


def run_once(argv: list[str], env: dict) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process, started on a quiet machine."""
    wait_quiet()
    start = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:  # not a pipe: a chatty child would fill it
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        stderr.seek(0)
        err = stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{err[-2000:]}")
    return wall, usage.ru_maxrss * 1024


def have(module: str) -> bool:
    probe = subprocess.run([PY, "-c", f"import {module}"], capture_output=True)
    return probe.returncode == 0


class Bench:
    """Runs measurements and keeps their rows; every file goes to ``work``."""

    def __init__(self, args):
        self.args = args
        self.runs = 1 if args.quick else args.runs
        self.floors_only = getattr(args, "floors_only", False)
        OUT.mkdir(exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir or OUT))
        self.rows: list[Row] = []
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.warm_env = {**self.env, "XDG_CACHE_HOME": str(self.work / "warm-cache")}
        self.weightgen = [str(Path(PY).parent / "weightgen")]
        if not Path(self.weightgen[0]).exists():
            self.weightgen = [PY, "-m", "weightgen"]
        if args.devices:
            self.device_args = ["--devices", args.devices]
        else:
            self.device_args = []
        self.scripts = {}
        folder = self.work / "scripts"
        folder.mkdir()
        bodies = {**ANCHORS, "floor": FLOOR, "disk": DISK, "transformers": TRANSFORMERS}
        bodies["disk-direct"] = DISK_DIRECT
        bodies["rate"] = RATE
        bodies["sha256"] = SHA256
        for i, (name, body) in enumerate(bodies.items()):
            self.scripts[name] = folder / f"script_{i}.py"
            self.scripts[name].write_text(textwrap.dedent(body))

    def row(self, case: str, tool: str, nbytes: int, elements: int = 0) -> Row:
        """A new table row (for sections kept in other scripts: bench_hosts.py)."""
        return Row(case, tool, nbytes, elements)

    def script(self, name: str, *args) -> list[str]:
        return [PY, str(self.scripts[name]), *map(str, args)]

    def clean(self) -> None:
        for path in self.work.iterdir():
            if path.name.startswith("out"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def measure(
        self,
        case,
        tool,
        argv,
        *,
        nbytes,
        elements=0,
        env=None,
        note="",
        before=None,
        repeat=None,
        keep=False,
    ) -> Row:
        row = Row(case, tool, nbytes, elements, note=note)
        for _ in range(repeat or self.runs):
            if before:
                before()
            self._time(row, argv, env)
            if not keep:
                self.clean()
        self._report(row)
        return row

    def _time(self, row: Row, argv, env) -> None:
        wall, rss = run_once(argv, env or self.env)
        row.walls.append(wall)
        row.peak_rss = max(row.peak_rss, rss)

    def _report(self, row: Row) -> None:
        self.rows.append(row)
        rate = f"{row.nbytes / row.wall / 1e6:8.0f} MB/s" if row.nbytes else ""
        print(
            f"{row.case:16} {row.tool:44} {row.wall:7.2f} s  {row.peak_rss / 2**20:7.0f} MiB  "
            f"{rate}",
            flush=True,
        )

    def measure_paired(self, case, variants, *, nbytes, elements=0, env=None, keep=False):
        """Several commands of one case, alternated run by run (A B A B ...), each run on a
        clean output, after one untimed run of each (compiles in the cache): a ratio between
        them sees the same machine. With ``keep``, the last command's last output stays."""
        rows = [Row(case, tool, nbytes, elements) for tool, _ in variants]
        for _, argv in variants:
            run_once(argv, env or self.env)
            self.clean()
        runs = self.runs
        for i in range(runs):
            for j, (row, (_, argv)) in enumerate(zip(rows, variants)):
                self._time(row, argv, env)
                if not (keep and i == runs - 1 and j == len(variants) - 1):
                    self.clean()
        for row in rows:
            self._report(row)
        return rows

    def skip(self, case, tool, note) -> None:
        self.rows.append(Row(case, tool, 0, note=note))
        print(f"{case:16} {tool:44} skipped: {note}", flush=True)

    # --- sections -------------------------------------------------------------------------

    def tensors(self) -> None:
        """One he-normal tensor: weightgen, its floors, and the scripts people write."""
        cases = [
            ("headline", (3, 3, 64, 128), "float32"),
            ("256 MiB f32", (8192, 8192), "float32"),
            ("1 GiB f32", (16384, 16384), "float32"),
            ("1 GiB bf16", (16384, 32768), "bfloat16"),
        ]
        if not self.args.quick:
            cases.append(("4 GiB f32", (32768, 32768), "float32"))
        if self.floors_only:
            cases = [c for c in cases if c[0] == "1 GiB f32"]
        torch = have("torch")
        out = self.work / "out.safetensors"
        cold = self.work / "cold-cache"
        for case, shape, dtype in cases:
            elements = math.prod(shape)
            nbytes = elements * (2 if dtype == "bfloat16" else 4)
            shape_arg = ",".join(map(str, shape))
            wg = [
                *self.weightgen,
                "he-normal",
                "--shape",
                shape_arg,
                "--dtype",
                dtype,
                "-o",
                str(out),
                "--force",
                "-q",
                *self.device_args,
            ]
            sizes = {"nbytes": nbytes, "elements": elements}
            if case == "headline":
                self.measure(
                    case,
                    "weightgen (cold compile cache)",
                    wg,
                    **sizes,
                    env={**self.env, "XDG_CACHE_HOME": str(cold)},
                    before=lambda: shutil.rmtree(cold, ignore_errors=True),
                )
                run_once(wg, self.warm_env)  # prime
                self.measure(case, "weightgen (warm compile cache)", wg, **sizes, env=self.warm_env)
            else:
                self.measure(case, "weightgen", wg, **sizes, env=self.warm_env)
                self.measure(case, SAME_TO_NULL, self.to_null(wg), **sizes, env=self.warm_env)
                if self.floors_only:
                    self.disk_floors(case, sizes)
                    continue
                if dtype == "bfloat16":
                    self.measure(
                        case,
                        "weightgen --sample-dtype float32",
                        [*wg, "--sample-dtype", "float32"],
                        **sizes,
                        env=self.warm_env,
                    )
                self.measure(
                    case,
                    "floor: generation, no I/O",
                    self.script("floor", shape_arg, dtype),
                    **sizes,
                    env=self.warm_env,
                )
                if case in ("1 GiB f32", "1 GiB bf16"):
                    self.threefry(case, shape_arg, dtype, sizes)
                self.disk_floors(case, sizes)
            big = shape == (32768, 32768)
            for tool in ANCHORS:
                if tool.startswith("torch") and not torch:
                    self.skip(case, tool, "torch not installed")
                    continue
                if dtype == "bfloat16" and tool == "numpy+safetensors":
                    continue  # numpy has no bfloat16 generator
                if tool == "torch trunc_normal_" and case != "1 GiB f32":
                    continue  # 35 s a run: measured once, at 1 GiB
                if big and not self.args.big_anchors and tool != "numpy+safetensors":
                    self.skip(case, tool, "needs ~18 GB (pass --big-anchors)")
                    continue
                slow = tool == "torch trunc_normal_"
                self.measure(
                    case,
                    tool,
                    self.script(tool, shape_arg, dtype, out),
                    **sizes,
                    repeat=1 if slow else None,
                    note="1 run" if slow else "",
                )

    def to_null(self, argv: list[str]) -> list[str]:
        """A weightgen command with its output sent to stdout (the benchmark points stdout
        at /dev/null): the same generation, hashing and safetensors bytes, no file."""
        out = argv.index("-o")
        rest = [a for a in argv[out + 2 :] if a != "--force"]
        return [*argv[:out], "-o", "-", "--format", "safetensors", *rest]

    def disk_floors(self, case: str, sizes: dict, repeat: int | None = None) -> None:
        """The disk's two floors for ``sizes["nbytes"]`` incompressible bytes: through the
        page cache with one fdatasync, and with O_DIRECT (as weightgen writes) and an fsync."""
        out = self.work / "out.bin"
        note = "1 run" if repeat == 1 else ""
        for tool, script in ((DISK_TOOL, "disk"), (DISK_DIRECT_TOOL, "disk-direct")):
            argv = self.script(script, sizes["nbytes"], out)
            self.measure(case, tool, argv, **sizes, repeat=repeat, note=note)

    def rates(self, shape_arg: str, dtype: str, devices: str, *choices, pin=(), runs=None) -> dict:
        """The rate script's seconds per run, by threefry choice (default: both), and its
        CPU seconds (``"cpu"``, by choice), ``runs`` runs (default: the bench's) in a
        process of its own (``pin``: a taskset prefix), started on a quiet machine."""
        argv = self.script("rate", shape_arg, dtype, runs or self.runs, devices, *choices)
        wait_quiet()
        proc = subprocess.run([*pin, *argv], env=self.warm_env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the rate script failed:\n{proc.stderr[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def threefry(self, case: str, shape_arg: str, dtype: str, sizes: dict) -> None:
        """Generation alone (no I/O, no start-up), JAX's threefry against weightgen's, timed
        inside one process, runs alternated: the rates the unrolled threefry changes."""
        seconds = self.rates(shape_arg, dtype, self.args.devices or "")
        for choice, tool in RATE_TOOLS.items():
            row = Row(case, tool, sizes["nbytes"], sizes["elements"], seconds[choice])
            row.note = "in one process, generation only"
            self.rows.append(row)
            rate = sizes["elements"] / row.wall / 1e6
            print(f"{case:16} {tool:44} {row.wall:7.2f} s  {rate:8.0f} M elements/s", flush=True)

    def cores(self) -> None:
        """One process on one core and on all of them (``taskset``), alternated run by run
        (the host's speed drifts: a ratio must see the same machine): generation timed
        inside the process (the rate script, weightgen's threefry, 1 GiB; with the cores it
        kept busy, its CPU seconds over its wall), and the whole command, start-up
        included, writing 4 GiB to /dev/null."""
        if not hasattr(os, "sched_getaffinity") or not shutil.which("taskset"):
            self.skip(CORES_CASE, "-", "needs Linux and taskset")
            return
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2:
            self.skip(CORES_CASE, "-", "one core: nothing to scale to")
            return
        pins = {
            label: ["taskset", "-c", ",".join(map(str, cores))]
            for label, cores in (("1 core", allowed[:1]), (f"{len(allowed)} cores", allowed))
        }
        elements = 16384 * 16384
        rows = {
            label: Row(CORES_CASE, f"{CORES_RATE}, {label}", elements * 4, elements)
            for label in pins
        }
        cpu: dict[str, list[float]] = {label: [] for label in pins}
        for _ in range(self.runs):  # a process per run: 1 core, all, 1 core, all ...
            for label, pin in pins.items():
                found = self.rates("16384,16384", "float32", "", "unrolled", pin=pin, runs=1)
                rows[label].walls += found["unrolled"]
                cpu[label] += found["cpu"]["unrolled"]
        for label, row in rows.items():
            busy = statistics.median(c / w for c, w in zip(cpu[label], row.walls))
            row.note = f"in one process, 1 GiB f32; {busy:.2f} cores busy"
            self.rows.append(row)
            print(
                f"{CORES_CASE:16} {row.tool:44} {row.wall:7.2f} s  {busy:.2f} cores busy",
                flush=True,
            )
        elements = 32768 * 32768
        out = str(self.work / "out.safetensors")
        command = [*self.weightgen, "he-normal", "--shape", "32768,32768"]
        command = self.to_null([*command, "-o", out, "-q", *self.device_args])
        variants = [(f"{CORES_COMMAND}, {label}", [*pin, *command]) for label, pin in pins.items()]
        for row in self.measure_paired(
            CORES_CASE, variants, nbytes=elements * 4, elements=elements, env=self.warm_env
        ):
            row.note = "4 GiB f32, start-up included"

    def hashing(self) -> None:
        """What a manifest costs (with it, without it) and verify against one sha256 pass."""
        out = self.work / "out.safetensors"
        wg = [
            *self.weightgen,
            "he-normal",
            "--shape",
            "16384,16384",
            "-o",
            str(out),
            "--force",
            "-q",
            *self.device_args,
        ]
        sizes = {"nbytes": GiB, "elements": GiB // 4}
        case = "manifest: 1 GiB"
        if not self.floors_only:
            manifest = self.work / "out.manifest.json"
            self.measure_paired(
                case,
                [
                    ("weightgen --no-manifest (none)", wg),
                    ("weightgen --manifest", [*wg, "--manifest", str(manifest)]),
                ],
                **sizes,
                env=self.warm_env,
            )
        spec = self.work / "llama-3.2-1b.json"
        spec.write_bytes(
            subprocess.run(
                [*self.weightgen, "hf", CONFIGS / "llama-3.2-1b.json", "--spec"],
                check=True,
                capture_output=True,
            ).stdout
        )
        elements = sum(
            math.prod(t["shape"]) for t in json.loads(spec.read_text())["tensors"].values()
        )
        sizes = {"nbytes": elements * 2, "elements": elements}
        case = "manifest: 1B spec"
        folder = self.work / "out-1b"
        run = [
            *self.weightgen,
            "run",
            str(spec),
            "-o",
            str(folder),
            "-q",
            "--force",
            *self.device_args,
        ]
        # Alternated, each on a clean folder: --force over the last run's 2.5 GB would add
        # the old files' removal (~0.1 s per GiB) to the runs that found them.
        self.measure_paired(
            case,
            [
                ("weightgen run --no-manifest", [*run, "--no-manifest"]),
                ("weightgen run (manifest)", run),
            ],
            **sizes,
            env=self.warm_env,
            keep=True,
        )
        if self.floors_only:
            self.clean()
            return
        # Both read the same files, from the page cache (warm) or from the disk (cold: the
        # cache dropped before each run, as for a checkpoint written earlier).
        for state in ("warm", "cold"):
            case = f"verify: 1B folder, {state}"
            prepare = functools.partial(_cache, folder, state)
            verify = [*self.weightgen, "verify", str(folder)]
            self.measure(case, "weightgen verify", verify, **sizes, keep=True, before=prepare)
            sha = self.script("sha256", folder)
            self.measure(
                case, "sha256, one pass, one thread", sha, **sizes, keep=True, before=prepare
            )
        self.clean()

    def model(self, config: Path, folder: Path) -> tuple[dict, list[str], list[str]]:
        """The sizes of a model in bfloat16, the command that writes it, and the same
        command to /dev/null: its spec run to stdout (one safetensors stream, the same
        tensors, the same manifest and hashing; a folder cannot go to stdout)."""
        spec = json.loads(
            subprocess.run(
                [*self.weightgen, "hf", config, "--spec", "--dtype", "bfloat16"],
                check=True,
                capture_output=True,
            ).stdout
        )
        elements = sum(math.prod(t["shape"]) for t in spec["tensors"].values())
        command = [*self.weightgen, "hf", str(config), "-o", str(folder), "--force", "-q"]
        command += ["--dtype", "bfloat16", *self.device_args]
        spec.pop("hf_config", None)  # what makes the output a folder
        spec_path = self.work / f"{config.stem}.stream.json"
        spec_path.write_text(json.dumps(spec))
        manifest = self.work / "out-stream.manifest.json"  # removed after each run
        to_null = [*self.weightgen, "run", str(spec_path), "-o", "-", "--format", "safetensors"]
        to_null += ["-q", "--manifest", str(manifest), *self.device_args]
        return {"nbytes": elements * 2, "elements": elements}, command, to_null

    def models(self) -> None:
        """Whole Hugging Face models: weightgen hf against from_config + save_pretrained."""
        config_1b = CONFIGS / "llama-3.2-1b.json"
        folder = self.work / "out-model"
        sizes, hf, to_null = self.model(config_1b, folder)
        case = "Llama-3.2-1B bf16"
        self.measure(case, "weightgen hf", hf, **sizes, env=self.warm_env)
        self.measure(case, SAME_TO_NULL, to_null, **sizes, env=self.warm_env)
        self.disk_floors(case, sizes)
        if self.floors_only:
            pass
        elif have("transformers"):
            config_dir = self.work / "config-1b"
            config_dir.mkdir(exist_ok=True)
            shutil.copy(config_1b, config_dir / "config.json")
            self.measure(
                case,
                "transformers from_config + save_pretrained",
                self.script("transformers", config_dir, "bfloat16", folder),
                **sizes,
            )
        else:
            self.skip(case, "transformers from_config + save_pretrained", "not installed")
        if self.args.quick:
            return
        sizes, hf, to_null = self.model(CONFIGS / "llama-3-8b.json", folder)
        case = "Llama-3-8B bf16"
        once = {"env": self.warm_env, "repeat": 1, "note": "1 run"}
        self.measure(case, "weightgen hf", hf, **sizes, **once)
        self.measure(case, SAME_TO_NULL, to_null, **sizes, **once)
        self.disk_floors(case, sizes, repeat=1)
        if self.floors_only:
            return
        self.skip(
            case,
            "transformers from_config + save_pretrained",
            "does not fit: 32 GB in float32 before the cast, on a 24 GB machine",
        )

    def many(self) -> None:
        """Many small tensors against few large ones (the same bytes, normal, float32, to
        one safetensors file with its manifest), and a 70,000-tensor spec of tiny tensors
        (DeepSeek-V3 and Kimi-K2 have 45,000-70,000) against one tensor of the same bytes."""
        quick = self.args.quick
        count = 2 if quick else 20
        cases = [
            (f"{count} x 256 MiB", count, [8192, 8192]),
            (f"{count * 1000:,} x 256 KiB", count * 1000, [256, 256]),
        ]
        case = "many: 512 MiB f32" if quick else "many: 5 GiB f32"
        # Compile every kernel the runs will use first (a large tensor's chunks; batches of
        # small tensors): the runs compare steady work, not compiles.
        self._spec_run(case, "", [(1, [1024, 1024]), (16, [256, 256])], "float32", prime=True)
        for tool, number, shape in cases:
            self._spec_run(case, tool, [(number, shape)], "float32")
        tiny = 7_000 if quick else 70_000
        case = f"many: {tiny:,} tensors"
        batches = [(1, [tiny * 64, 32]), (256 + tiny % 256, [64, 32])]  # rows of 256 and the rest
        self._spec_run(case, "", batches, "bfloat16", prime=True)
        self._spec_run(case, "1 tensor of the same bytes", [(1, [tiny * 64, 32])], "bfloat16")
        self._spec_run(case, f"{tiny:,} x 4 KiB", [(tiny, [64, 32])], "bfloat16")

    def _spec_run(
        self, case: str, tool: str, groups: list, dtype: str, *, prime: bool = False
    ) -> None:
        """``weightgen run`` of a spec of ``count`` normal tensors of ``shape`` per group."""
        tensors = {}
        for group, (count, shape) in enumerate(groups):
            width = len(str(count - 1))
            for i in range(count):
                name = f"layers.{group}.{i:0{width}d}.weight"
                tensors[name] = {"init": "normal", "shape": shape, "stddev": 0.02}
        spec = self.work / "many.json"
        spec.write_text(json.dumps({"seed": 1, "dtype": dtype, "tensors": tensors}))
        elements = sum(count * math.prod(shape) for count, shape in groups)
        itemsize = 2 if dtype == "bfloat16" else 4
        out = self.work / "out.safetensors"
        run = [*self.weightgen, "run", str(spec), "-o", str(out), "--force", "-q"]
        run += self.device_args
        if prime:
            run_once(run, self.warm_env)
            self.clean()
            return
        sizes = {"nbytes": elements * itemsize, "elements": elements}
        self.measure(case, tool, run, **sizes, env=self.warm_env)

    def hosts(self) -> None:
        """Several processes on jax.distributed (see the README's 'Many hosts')."""
        try:
            from bench_hosts import hosts
        except ImportError:
            self.skip("hosts", "-", "scripts/bench_hosts.py not found")
            return
        hosts(self)


def _cache(folder: Path, state: str) -> None:
    """Put a folder's files in the page cache (warm) or drop them from it (cold)."""
    for path in folder.iterdir():
        with open(path, "rb") as f:
            if state == "warm":
                while f.read(16 << 20):
                    pass
            else:
                os.fsync(f.fileno())  # only clean pages can be dropped
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def _find(rows, case, tool):
    for r in rows:
        if r.case == case and r.tool == tool and r.walls:
            return r
    return None


# (case, its write, the case whose floors it shares): the 1B spec run writes what hf does.
FLOOR_WRITES = (
    ("256 MiB f32", "weightgen", None),
    ("1 GiB f32", "weightgen", None),
    ("1 GiB bf16", "weightgen", None),
    ("4 GiB f32", "weightgen", None),
    ("Llama-3.2-1B bf16", "weightgen hf", None),
    ("manifest: 1B spec", "weightgen run (manifest)", "Llama-3.2-1B bf16"),
    ("Llama-3-8B bf16", "weightgen hf", None),
)
FLOOR_LIMIT = 1.15  # write / the slower of the host's two floors


def floors(rows) -> list[dict]:
    """Each write against the host's two floors, measured in the same run: generation alone
    (the same command to /dev/null) and the disk (the faster of its two ways, O_DIRECT or
    the page cache with fdatasync). The slower floor is what the host allows."""
    found = []
    for case, tool, floors_of in FLOOR_WRITES:
        write = _find(rows, case, tool)
        base = floors_of or case
        alone = _find(rows, base, SAME_TO_NULL)
        disks = [r for r in (_find(rows, base, t) for t in (DISK_TOOL, DISK_DIRECT_TOOL)) if r]
        if not (write and alone and disks):
            continue
        disk = min(disks, key=lambda r: r.wall)
        slower = max(alone.wall, disk.wall)
        found.append(
            {
                "case": case,
                "write": write.wall,
                "alone": alone.wall,
                "disk": disk.wall,
                "disk_how": "O_DIRECT" if disk.tool == DISK_DIRECT_TOOL else "fdatasync",
                "limit": "generation" if alone.wall >= disk.wall else "disk",
                "ratio": write.wall / slower,
                "vs_alone": write.wall / alone.wall,
            }
        )
    return found


def targets(rows) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for each issue's targets."""
    out = []

    def check(label, value, limit, fmt="{:.2f}x", at_least=False):
        if value is None or value is False:
            out.append((label, "not measured", "-"))
        else:
            met = value >= limit if at_least else value <= limit
            out.append((label, fmt.format(value), "met" if met else "NOT met"))

    def ratio(case, a, b):
        x, y = _find(rows, case, a), _find(rows, case, b)
        return x and y and x.wall / y.wall

    def rss(case, tool):
        row = _find(rows, case, tool)
        return row and row.peak_rss / 2**20

    mib = "{:.0f} MiB"
    wg = "weightgen"
    measured = {f["case"]: f["ratio"] for f in floors(rows)}
    for case in ("1 GiB f32", "Llama-3.2-1B bf16", "Llama-3-8B bf16"):
        check(
            f"{case}: write / max(generation alone, disk floor) <= {FLOOR_LIMIT:.2f}x",
            measured.get(case),
            FLOOR_LIMIT,
        )
    check(
        "1 GiB: weightgen / hand-written JAX <= 0.33",
        ratio("1 GiB f32", wg, "jax+safetensors"),
        0.33,
    )
    # float32: threefry is most of a draw. (bfloat16 drawn in bfloat16, also measured, spends
    # more of it in the half-precision float map, which the threefry does not change.)
    check(
        "1 GiB f32, generation alone: unrolled threefry / JAX's <= 0.80x",
        ratio("1 GiB f32", RATE_TOOLS["unrolled"], RATE_TOOLS["jax"]),
        0.80,
    )
    check(
        "1 GiB: weightgen / torch kaiming_normal_ < 1",
        ratio("1 GiB f32", wg, "torch kaiming_normal_"),
        1.0,
    )
    check(
        "1 GiB: weightgen / generation floor <= 1.3",
        ratio("1 GiB f32", wg, "floor: generation, no I/O"),
        1.3,
    )
    check("1 GiB: peak RSS <= 400 MiB", rss("1 GiB f32", wg), 400, mib)
    check("4 GiB: peak RSS <= 400 MiB", rss("4 GiB f32", wg), 400, mib)
    cold = _find(rows, "headline", "weightgen (cold compile cache)")
    check("headline cold <= 1.5 s", cold and cold.wall, 1.5, "{:.2f} s")
    check(
        "headline warm < cold",
        ratio("headline", "weightgen (warm compile cache)", "weightgen (cold compile cache)"),
        0.999,
    )
    check(
        "manifest cost, 1 GiB tensor <= 1.10x",
        ratio("manifest: 1 GiB", "weightgen --manifest", "weightgen --no-manifest (none)"),
        1.10,
    )
    check(
        "manifest cost, 1B spec <= 1.10x",
        ratio("manifest: 1B spec", "weightgen run (manifest)", "weightgen run --no-manifest"),
        1.10,
    )
    for state in ("warm", "cold"):
        case = f"verify: 1B folder, {state}"
        check(
            f"verify / one sha256 pass <= 1.2x ({state} cache)",
            ratio(case, "weightgen verify", "sha256, one pass, one thread"),
            1.2,
        )
    check(
        "1B model: weightgen / transformers <= 0.30x",
        ratio("Llama-3.2-1B bf16", "weightgen hf", "transformers from_config + save_pretrained"),
        0.30,
    )
    check("1B model: peak RSS <= 400 MiB", rss("Llama-3.2-1B bf16", "weightgen hf"), 400, mib)
    check("8B model: peak RSS <= 400 MiB", rss("Llama-3-8B bf16", "weightgen hf"), 400, mib)
    check(
        "8B model: write rate / disk rate >= 0.95",
        ratio("Llama-3-8B bf16", "floor: disk write + fdatasync", "weightgen hf"),
        0.95,
        at_least=True,
    )
    for count in (20, 2):
        case = "many: 5 GiB f32" if count == 20 else "many: 512 MiB f32"
        check(
            f"{count * 1000:,} x 256 KiB / {count} x 256 MiB (same bytes) <= 1.3x",
            ratio(case, f"{count * 1000:,} x 256 KiB", f"{count} x 256 MiB"),
            1.3,
        )
    for tiny in (70_000, 7_000):
        case = f"many: {tiny:,} tensors"
        many, one = (
            _find(rows, case, f"{tiny:,} x 4 KiB"),
            _find(rows, case, "1 tensor of the same bytes"),
        )
        check(
            f"{tiny:,} tensors: planning, dispatch and manifest beyond one tensor <= 10 s",
            many and one and many.wall - one.wall,
            10.0,
            "{:.2f} s",
        )
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ()
    # Generation itself; the whole command (start-up included) is in the table beside it.
    many = _find(rows, CORES_CASE, f"{CORES_RATE}, {len(cores)} cores")
    one = _find(rows, CORES_CASE, f"{CORES_RATE}, 1 core")
    check(
        f"speedup, one process generating on {len(cores)} cores / 1 core "
        f">= {0.9 * len(cores):.1f}x",
        many and one and one.wall / many.wall,
        0.9 * len(cores),
        at_least=True,
    )
    for label, value, limit, fmt in HOST_TARGETS(rows):
        check(label, value, limit, fmt, at_least=label.startswith("speedup"))
    return [t for t in out if t[1] != "not measured"]


def HOST_TARGETS(rows):
    try:
        from bench_hosts import host_targets
    except ImportError:
        return []
    return host_targets(rows, _find)


def report(rows: list[Row], runs: int, seconds: float = 0.0) -> None:
    import jax

    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "runs": runs,
        "seconds": round(seconds),
    }
    payload = {
        "meta": meta,
        "rows": [{**asdict(r), "wall": r.walls and r.wall} for r in rows],
        "targets": targets(rows),
        "floors": floors(rows),
    }
    (OUT / "results.json").write_text(json.dumps(payload, indent=2))

    lines = [
        "# weightgen benchmark",
        "",
        f"{meta['date']}; {meta['machine']}; jax {meta['jax']} ({meta['backend']}); "
        f"median of {runs} run(s); whole processes, each started once the rest of the machine "
        f"was quiet (up to {QUIET_WAIT:.0f} s each, {_WAITED:.0f} s in all); the benchmark took "
        f"{seconds / 60:.1f} min.",
        "",
        "| case | tool | wall (s) | vs first | peak RSS (MiB) | MB/s | note |",
        "|---|---|---|---|---|---|---|",
    ]
    firsts: dict[str, Row] = {}
    for r in rows:
        if not r.walls:
            lines.append(f"| {r.case} | {r.tool} | - | - | - | - | {r.note} |")
            continue
        base = firsts.setdefault(r.case, r)
        if r.case == "headline" and "warm" in r.tool:
            firsts[r.case] = base = r
        rate = f"{r.nbytes / r.wall / 1e6:.0f}" if r.nbytes else "-"
        lines.append(
            f"| {r.case} | {r.tool} | {r.wall:.2f} | {r.wall / base.wall:.2f}x | "
            f"{r.peak_rss / 2**20:.0f} | {rate} | {r.note} |"
        )
    lines += [
        "",
        "## Against the host's floors",
        "",
        "The slower of generation alone (the same command, output to /dev/null) and the disk",
        "(the faster of O_DIRECT + fsync and the page cache + fdatasync, the same bytes) is",
        f"what this host allows; the target is write <= {FLOOR_LIMIT:.2f}x that.",
        "",
        "| case | write (s) | generation alone (s) | disk floor (s) | host's limit "
        "| write / slower floor | write / generation alone |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {f['case']} | {f['write']:.2f} | {f['alone']:.2f} | {f['disk']:.2f} "
        f"({f['disk_how']}) | {f['limit']} | {f['ratio']:.2f}x | {f['vs_alone']:.2f}x |"
        for f in payload["floors"]
    ]
    lines += ["", "## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {v} |" for t, m, v in payload["targets"]]
    lines += [
        "",
        "'vs first' is wall / the wall of the case's first row. weightgen fsyncs its output",
        "(atomic commit); the anchors do not. The disk floors write the same byte count of",
        "incompressible data, through the page cache with one fdatasync, and with O_DIRECT",
        "(8 MiB aligned blocks, as weightgen and dd oflag=direct write) and one fsync.",
    ]
    lines += gpu_section()
    (OUT / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows)


GPU_CHECK = OUT / "gpu_check.json"  # scripts/gpu_check.py --out, from a GPU machine


def gpu_section() -> list[str]:
    """The last GPU check's table (committed as bench/gpu_check.json: this machine has no
    GPU), so the results keep it when the CPU benchmark runs again."""
    if not GPU_CHECK.is_file():
        return []
    found = json.loads(GPU_CHECK.read_text())
    meta = found["meta"]
    lines = [
        "",
        "## GPU check",
        "",
        f"{meta['date']}; {meta['machine']}, {meta.get('device', 'GPU')}; python "
        f"{meta['python']}; jax {meta['jax']} ({meta['backend']}); `scripts/gpu_check.py` "
        f"took {meta['seconds']:.0f} s.",
        "",
        "| section | check | result | detail |",
        "|---|---|---|---|",
    ]
    shown = {True: "yes", False: "NO"}  # the script's own words for a check's outcome

    def cell(value) -> str:
        return shown[value] if isinstance(value, bool) else str(value)

    lines += [
        f"| {r['section']} | {r['check']} | {cell(r['result'])} | {r['detail']} |"
        for r in found["rows"]
    ]
    return lines


def plot(rows: list[Row]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
        return
    tensor_cases = {"headline", "256 MiB f32", "1 GiB f32", "4 GiB f32"}
    points: dict[str, list] = {}
    for r in rows:
        skip = ("disk", "cold", "generation rate")
        if r.case in tensor_cases and r.walls and not any(word in r.tool for word in skip):
            tool = "weightgen" if r.tool.startswith("weightgen") else r.tool
            points.setdefault(tool, []).append((r.nbytes, r.elements / r.wall / 1e6))
    if not points:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for tool, values in points.items():
        xs, ys = zip(*sorted(values))
        style = "-o" if tool.startswith("weightgen") else "--s"
        ax.plot([x / 2**20 for x in xs], ys, style, label=tool)
    ax.set_xscale("log")
    ax.set_xlabel("tensor size (MiB, float32)")
    ax.set_ylabel("M elements / s (whole process)")
    ax.set_title("he-normal to safetensors: throughput against tensor size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "throughput.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--quick", action="store_true", help="1 run each, no 4 GiB or 8B case")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"sections to run ({', '.join(SECTIONS)}), or {FLOORS} alone: the rows compared "
        "with the host's floors (1 GiB, the 1B spec, 1B and 8B models; no anchors)",
    )
    parser.add_argument(
        "--big-anchors",
        action="store_true",
        help="also run the JAX and torch anchors at 4 GiB (needs ~18 GB of RAM)",
    )
    parser.add_argument("--devices", default=None, help="weightgen --devices (e.g. gpu)")
    parser.add_argument("--workdir", default=None, help="where the files go (default: bench/)")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in (*SECTIONS, FLOORS)]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    args.floors_only = FLOORS in chosen
    if args.floors_only:
        if len(chosen) > 1:
            parser.error(f"--only {FLOORS} runs alone (its rows are part of the other sections)")
        chosen = ["tensors", "hashing", "models"]
    started = time.perf_counter()
    bench = Bench(args)
    try:
        for section in SECTIONS:
            if section in chosen:
                getattr(bench, section)()
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)
    report(bench.rows, bench.runs, time.perf_counter() - started)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
