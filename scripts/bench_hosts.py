"""make bench, section "hosts": several processes writing one output on jax.distributed.

- scaling: a 2 GiB spec written by 1 process pinned to 1 core against 2 processes pinned to
  1 core each (taskset), the output on tmpfs so that the disk does not hide the scaling;
- overhead: the coordination itself (start-up, agreement, gathering, commit), as the wall
  time of 2 processes minus that of 1, for a spec of a few KiB.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

GiB = 2**30


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_many(argvs: list[list[str]], env: dict) -> tuple[float, int]:
    """Wall seconds until every process ended, and the largest peak RSS (bytes)."""
    import subprocess

    start = time.perf_counter()
    procs = [
        subprocess.Popen(a, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for a in argvs
    ]
    peak, failed = 0, []
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        peak = max(peak, usage.ru_maxrss * 1024)
        if os.waitstatus_to_exitcode(status) != 0:
            failed.append(proc.stderr.read().decode(errors="replace")[-2000:])
    wall = time.perf_counter() - start
    if failed:
        raise RuntimeError(f"{argvs[0]} failed:\n{failed[0]}")
    return wall, peak


def hosts(bench) -> None:
    """Rows for bench.rows; ``bench`` is scripts/bench.py's Bench (this module imports
    nothing from it: bench.py uses this one)."""
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    work = Path(tempfile.mkdtemp(prefix="weightgen-bench-", dir=shm))
    try:
        cases = [
            ("hosts: 2 GiB, 1 core each", {"w": {"init": "normal", "shape": [16384, 32768]}}, True),
            ("hosts: 4 KiB spec", {"w": {"init": "normal", "shape": [32, 32]}}, False),
        ]
        if bench.args.quick:
            cases[0] = (
                "hosts: 512 MiB, 1 core each",
                {"w": {"init": "normal", "shape": [8192, 16384]}},
                True,
            )
        for case, tensors, pinned in cases:
            spec = work / "spec.json"
            spec.write_text(json.dumps({"seed": 1, "tensors": tensors}))
            nbytes = sum(4 * t["shape"][0] * t["shape"][1] for t in tensors.values())
            out = work / "out.safetensors"
            base = [*bench.weightgen, "run", str(spec), "-o", str(out), "--force", "-q"]
            for count in (1, 2):
                walls, peak = [], 0
                for _ in range(bench.runs):
                    port = _port()
                    argvs = []
                    for pid in range(count):
                        argv = list(base)
                        if count > 1:
                            argv += [
                                "--coordinator-address",
                                f"127.0.0.1:{port}",
                                "--num-processes",
                                str(count),
                                "--process-id",
                                str(pid),
                            ]
                        if pinned and shutil.which("taskset"):
                            argv = ["taskset", "-c", str(pid % (os.cpu_count() or 1)), *argv]
                        argvs.append(argv)
                    wall, rss = _run_many(argvs, bench.warm_env)
                    walls.append(wall)
                    peak = max(peak, rss)
                    out.unlink(missing_ok=True)
                tool = f"{count} process{'es' if count > 1 else ''}"
                row = bench.row(case, tool, nbytes, nbytes // 4)
                row.walls, row.peak_rss = walls, peak
                row.note = "taskset, tmpfs" if pinned else ("tmpfs" if shm else "")
                bench.rows.append(row)
                print(f"{case:28} {row.tool:12} {statistics.median(walls):7.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def host_targets(rows, find):
    """(label, value, limit, format) of the hosts section's targets."""
    out = []
    for case in ("hosts: 2 GiB, 1 core each", "hosts: 512 MiB, 1 core each"):
        one, two = find(rows, case, "1 process"), find(rows, case, "2 processes")
        if one and two:
            out.append(
                (
                    f"speedup, 2 processes on 2 cores ({case[7:]}) >= 1.8x",
                    one.wall / two.wall,
                    1.8,
                    "{:.2f}x",
                )
            )
    one = find(rows, "hosts: 4 KiB spec", "1 process")
    two = find(rows, "hosts: 4 KiB spec", "2 processes")
    if one and two:
        out.append(
            ("coordination overhead, small spec < 1 s", two.wall - one.wall, 1.0, "{:.2f} s")
        )
    return out
