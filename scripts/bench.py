#!/usr/bin/env python3
"""make bench: weightgen against the hand-written anchors, side by side, in one run.

Every measurement is a whole process (imports, compile, generation, write), started by this
script; wall time is the median of --runs runs and peak RSS comes from wait4(). Ratios are
taken between numbers measured here, in the same run, since the machines are shared and noisy.

Writes bench/results.json, bench/results.md and bench/throughput.png.
"""

from __future__ import annotations

import argparse
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
PY = sys.executable
GiB = 2**30

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
        def write(self, index, chunk): pass
    engine.run(engine.Engine(engine.select_devices(None)), Plan.of([spec]), Null(), hashes=False)
"""

# The disk: write the same number of bytes with one fdatasync at the end.
DISK = """
    import os, sys
    nbytes, out = int(sys.argv[1]), sys.argv[2]
    block = bytes(16 << 20)
    with open(out, "wb") as f:
        for _ in range(nbytes // len(block)):
            f.write(block)
        f.write(bytes(nbytes % len(block)))
        f.flush()
        os.fdatasync(f.fileno())
"""


@dataclass
class Row:
    case: str
    tool: str
    shape: list[int]
    dtype: str
    nbytes: int
    walls: list[float] = field(default_factory=list)
    peak_rss: int = 0
    note: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def elements_per_s(self) -> float:
        elements = self.nbytes // (2 if self.dtype == "bfloat16" else 4)
        return elements / self.wall


def run_once(argv: list[str], env: dict) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{err[-2000:]}")
    return wall, usage.ru_maxrss * 1024


def have(module: str) -> bool:
    probe = subprocess.run([PY, "-c", f"import {module}"], capture_output=True)
    return probe.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--quick", action="store_true", help="1 run each, no 4 GiB case")
    parser.add_argument(
        "--big-anchors",
        action="store_true",
        help="also run the JAX and torch anchors at 4 GiB (needs ~18 GB of RAM)",
    )
    parser.add_argument("--devices", default=None, help="weightgen --devices (e.g. gpu)")
    parser.add_argument("--workdir", default=None, help="where the files go (default: bench/)")
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs

    OUT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir or OUT))
    scripts = work / "scripts"
    scripts.mkdir()
    script_of = {}
    for i, (name, body) in enumerate({**ANCHORS, "floor": FLOOR, "disk": DISK}.items()):
        script_of[name] = scripts / f"script_{i}.py"
        script_of[name].write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cold_cache = work / "cold-cache"
    warm_cache = work / "warm-cache"
    weightgen = [str(Path(PY).parent / "weightgen")]
    if not Path(weightgen[0]).exists():
        weightgen = [PY, "-m", "weightgen"]
    torch = have("torch")

    cases = [
        ("headline", (3, 3, 64, 128), "float32"),
        ("256 MiB f32", (8192, 8192), "float32"),
        ("1 GiB f32", (16384, 16384), "float32"),
        ("1 GiB bf16", (16384, 32768), "bfloat16"),
    ]
    if not args.quick:
        cases.append(("4 GiB f32", (32768, 32768), "float32"))
    rows: list[Row] = []

    def measure(case, tool, shape, dtype, argv, *, run_env=None, note="", before=None, repeat=None):
        nbytes = (2 if dtype == "bfloat16" else 4) * math.prod(shape)
        row = Row(case, tool, list(shape), dtype, nbytes, note=note)
        for _ in range(repeat or runs):
            if before:
                before()
            wall, rss = run_once(argv, run_env or env)
            row.walls.append(wall)
            row.peak_rss = max(row.peak_rss, rss)
            for f in work.glob("*.out"):
                f.unlink()
        rows.append(row)
        print(
            f"{case:12} {tool:34} {row.wall:7.2f} s  {row.peak_rss / 2**20:7.0f} MiB  "
            f"{row.elements_per_s / 1e6:8.1f} M elem/s",
            flush=True,
        )
        return row

    for case, shape, dtype in cases:
        shape_arg = ",".join(map(str, shape))
        out = str(work / "w.out")
        big = shape == (32768, 32768)
        wg = [
            *weightgen,
            "he-normal",
            "--shape",
            shape_arg,
            "--dtype",
            dtype,
            "-o",
            out,
            "--format",
            "safetensors",
            "--force",
            "-q",
        ]
        if args.devices:
            wg += ["--devices", args.devices]
        if case == "headline":
            shutil.rmtree(cold_cache, ignore_errors=True)
            measure(
                case,
                "weightgen (cold compile cache)",
                shape,
                dtype,
                wg,
                run_env={**env, "XDG_CACHE_HOME": str(cold_cache)},
                before=lambda: shutil.rmtree(cold_cache, ignore_errors=True),
            )
            run_once(wg, {**env, "XDG_CACHE_HOME": str(warm_cache)})  # prime
            measure(
                case,
                "weightgen (warm compile cache)",
                shape,
                dtype,
                wg,
                run_env={**env, "XDG_CACHE_HOME": str(warm_cache)},
            )
        else:
            measure(
                case,
                "weightgen",
                shape,
                dtype,
                wg,
                run_env={**env, "XDG_CACHE_HOME": str(warm_cache)},
            )
            if dtype == "bfloat16":
                measure(
                    case,
                    "weightgen --sample-dtype float32",
                    shape,
                    dtype,
                    [*wg, "--sample-dtype", "float32"],
                    run_env={**env, "XDG_CACHE_HOME": str(warm_cache)},
                )
            measure(
                case,
                "floor: generation, no I/O",
                shape,
                dtype,
                [PY, str(script_of["floor"]), shape_arg, dtype],
                run_env={**env, "XDG_CACHE_HOME": str(warm_cache)},
            )
            nbytes = rows[-1].nbytes
            measure(
                case,
                "floor: disk write + fdatasync",
                shape,
                dtype,
                [PY, str(script_of["disk"]), str(nbytes), out],
            )
        skip_big = big and not args.big_anchors
        for tool in ANCHORS:
            if tool.startswith("torch") and not torch:
                rows.append(Row(case, tool, list(shape), dtype, 0, note="torch not installed"))
                continue
            if dtype == "bfloat16" and tool == "numpy+safetensors":
                continue  # numpy has no bfloat16 generator
            if tool == "torch trunc_normal_" and case != "1 GiB f32":
                continue  # 35 s a run: measured once, at 1 GiB
            if skip_big and tool != "numpy+safetensors":
                rows.append(
                    Row(
                        case,
                        tool,
                        list(shape),
                        dtype,
                        0,
                        note="skipped: needs ~18 GB (pass --big-anchors)",
                    )
                )
                continue
            slow = tool == "torch trunc_normal_"  # ~35 s a run: one run is enough to compare
            measure(
                case,
                tool,
                shape,
                dtype,
                [PY, str(script_of[tool]), shape_arg, dtype, out],
                repeat=1 if slow else None,
                note="1 run" if slow else "",
            )

    shutil.rmtree(work, ignore_errors=True)
    report(rows, runs)


def _find(rows, case, tool):
    for r in rows:
        if r.case == case and r.tool == tool and r.walls:
            return r
    return None


def targets(rows) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for the engine issue's targets."""
    out = []

    def check(label, value, limit, fmt="{:.2f}x"):
        if value is None:
            out.append((label, "not measured", "-"))
        else:
            out.append((label, fmt.format(value), "met" if value <= limit else "NOT met"))

    wg = _find(rows, "1 GiB f32", "weightgen")
    jx = _find(rows, "1 GiB f32", "jax+safetensors")
    tk = _find(rows, "1 GiB f32", "torch kaiming_normal_")
    fl = _find(rows, "1 GiB f32", "floor: generation, no I/O")
    check("1 GiB: weightgen / hand-written JAX <= 0.35", wg and jx and wg.wall / jx.wall, 0.35)
    check("1 GiB: weightgen / torch kaiming_normal_ < 1", wg and tk and wg.wall / tk.wall, 1.0)
    check("1 GiB: weightgen / generation floor <= 1.3", wg and fl and wg.wall / fl.wall, 1.3)
    check("1 GiB: peak RSS <= 400 MiB", wg and wg.peak_rss / 2**20, 400, "{:.0f} MiB")
    big = _find(rows, "4 GiB f32", "weightgen")
    check("4 GiB: peak RSS <= 400 MiB", big and big.peak_rss / 2**20, 400, "{:.0f} MiB")
    check(
        "4 GiB per GiB / 1 GiB per GiB <= 1.25",
        big and wg and (big.wall / 4) / wg.wall,
        1.25,
    )
    cold = _find(rows, "headline", "weightgen (cold compile cache)")
    warm = _find(rows, "headline", "weightgen (warm compile cache)")
    check("headline cold <= 1.5 s", cold and cold.wall, 1.5, "{:.2f} s")
    check("headline warm < cold", warm and cold and warm.wall / cold.wall, 0.999)
    return out


def report(rows: list[Row], runs: int) -> None:
    import jax

    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "runs": runs,
    }
    payload = {
        "meta": meta,
        "rows": [{**asdict(r), "wall": r.walls and r.wall} for r in rows],
        "targets": targets(rows),
    }
    (OUT / "results.json").write_text(json.dumps(payload, indent=2))

    lines = [
        "# weightgen benchmark",
        "",
        f"{meta['date']}; {meta['machine']}; jax {meta['jax']} ({meta['backend']}); "
        f"median of {runs} run(s); whole process, he-normal to safetensors.",
        "",
        "| case | tool | wall (s) | vs weightgen | peak RSS (MiB) | M elements/s | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = _find(rows, r.case, "weightgen") or _find(
            rows, r.case, "weightgen (warm compile cache)"
        )
        if not r.walls:
            lines.append(f"| {r.case} | {r.tool} | - | - | - | - | {r.note} |")
            continue
        ratio = f"{r.wall / base.wall:.2f}x" if base else "-"
        lines.append(
            f"| {r.case} | {r.tool} | {r.wall:.2f} | {ratio} | {r.peak_rss / 2**20:.0f} | "
            f"{r.elements_per_s / 1e6:.1f} | {r.note} |"
        )
    lines += ["", "## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {v} |" for t, m, v in payload["targets"]]
    lines += [
        "",
        "weightgen fsyncs its output (atomic commit); the anchors do not. The disk floor is the",
        "same byte count written with one fdatasync. 'vs weightgen' is wall / weightgen's wall.",
    ]
    (OUT / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows)


def plot(rows: list[Row]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(8, 5))

    def series(tool: str) -> str:  # the headline's warm run continues weightgen's line
        return "weightgen" if tool == "weightgen (warm compile cache)" else tool

    skip = ("disk", "cold")
    tools = [
        t for t in dict.fromkeys(series(r.tool) for r in rows) if not any(k in t for k in skip)
    ]
    for tool in tools:
        points = sorted(
            (r.nbytes, r.elements_per_s / 1e6)
            for r in rows
            if series(r.tool) == tool and r.walls and r.dtype == "float32"
        )
        if points:
            xs, ys = zip(*points)
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


if __name__ == "__main__":
    main()
