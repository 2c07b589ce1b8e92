"""Many hosts: real jax.distributed coordination between real processes on 127.0.0.1.

Each process runs in its own session with short timeouts, and every process a test started is
killed when it ends, so a failing test never leaves one behind or hangs. The oracle for a
shared run is one process writing the same command: the same bytes, the same manifest.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SIGNAL_HOOK
from hypothesis import given, settings
from hypothesis import strategies as st

import weightgen
from weightgen import atomic
from weightgen.plan import Plan, make_tensor

TIMEOUT = 4  # --distributed-timeout in these tests: seconds
LIMIT = 120  # no process of a test may run longer

SPEC = {
    "seed": 11,
    "tensors": {
        "big": {"init": "normal", "shape": [3000, 4000], "stddev": 0.02},  # 48 MB: cut inside
        "emb": {"init": "normal", "shape": [1000, 64], "zero_rows": [3], "dtype": "bfloat16"},
        "q": {"init": "orthogonal", "shape": [96, 96]},  # whole: never cut
        "k": {
            "init": "he-normal",
            "shape": [3, 3, 64, 128],
            "dtype": "bfloat16",
            "sample_dtype": "float32",
        },
        "norm": {"init": "ones", "shape": [64]},
        "empty": {"init": "zeros", "shape": [0, 8]},
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Job:
    """N processes of one weightgen command, each in its own session; all killed at the end."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def start(self, count: int, args, *, cwd=None, env=None, per_process=None, port=None):
        port = port or free_port()
        self.procs = []
        self.started = time.monotonic()
        for pid in range(count):
            extra = per_process(pid) if per_process else {}
            launcher = extra.get("launcher", ["-m", "weightgen"])  # or ["-c", CODE]
            command = [sys.executable, *launcher, *extra.get("args", args)]
            if not extra.get("no_cluster_args"):
                command += [
                    "--coordinator-address",
                    f"127.0.0.1:{port}",
                    "--num-processes",
                    str(count),
                    "--process-id",
                    str(pid),
                ]
            command += ["--distributed-timeout", str(TIMEOUT)]
            environment = {**os.environ, "XLA_FLAGS": "", **(env or {}), **extra.get("env", {})}
            self.procs.append(
                subprocess.Popen(
                    command,
                    cwd=extra.get("cwd", cwd or self.tmp),
                    env=environment,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )
            )
        return self

    def wait(self) -> list[tuple[int, str, str, float]]:
        """(exit code, stdout, stderr, seconds since start) of each process."""
        results = []
        for proc in self.procs:
            try:
                out, err = proc.communicate(
                    timeout=max(1, LIMIT - (time.monotonic() - self.started))
                )
            except subprocess.TimeoutExpired:
                self.kill()
                out, err = proc.communicate()
            results.append((proc.returncode, out, err, time.monotonic() - self.started))
        return results

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def job(tmp_path):
    running = Job(tmp_path)
    yield running
    running.kill()


def run_job(job: Job, count: int, args, **kwargs):
    """Start and wait; once more on a fresh port if the first was taken meanwhile."""
    results = job.start(count, args, **kwargs).wait()
    if any("cannot start the coordination service" in err for _, _, err, _ in results):
        results = job.start(count, args, **kwargs).wait()
    return results


def spec_file(folder: Path, document=SPEC, name="spec.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(document))
    return path


def one_process(tmp_path: Path, args) -> Path:
    """The oracle: the same command, one process, in a folder of its own."""
    alone = tmp_path / "alone"
    alone.mkdir(exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "weightgen", *args],
        cwd=alone,
        check=True,
        capture_output=True,
        timeout=LIMIT,
    )
    return alone


def devices(pid: int) -> dict:
    """Any number of devices per process: process i has i + 1 CPU devices."""
    return {"env": {"XLA_FLAGS": f"--xla_force_host_platform_device_count={pid + 1}"}}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if atomic.TMP_SUFFIX in p.name)


# --- the same result as one process ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("count", [2, 3, 4])
def test_a_single_file_is_byte_identical_to_one_process(tmp_path, job, count):
    spec = spec_file(tmp_path)
    args = ["run", str(spec), "-o", "m.safetensors", "-q"]
    alone = one_process(tmp_path, args)
    shared = tmp_path / "shared"
    shared.mkdir()
    results = run_job(job, count, [*args, "--json"], cwd=shared, per_process=devices)
    assert all(code == 0 for code, *_ in results), [err for *_, err, _ in results]
    for name in ("m.safetensors", "m.safetensors.manifest.json"):
        assert (shared / name).read_bytes() == (alone / name).read_bytes(), name
    summary = json.loads(results[0][1])
    shares = summary["processes"]
    assert [s["process"] for s in shares] == list(range(count))
    assert sum(s["bytes"] for s in shares) == summary["bytes"]
    for pid, (_, out, _, _) in list(enumerate(results))[1:]:
        assert json.loads(out)["bytes"] == shares[pid]["bytes"]  # each reports its share
    assert weightgen.verify(None, shared / "m.safetensors") == []
    assert leftovers(shared) == []


@pytest.mark.slow
def test_a_sharded_folder_is_byte_identical_to_one_process(tmp_path, job):
    spec = spec_file(tmp_path)
    args = ["run", str(spec), "-o", "ckpt/", "-q", "--max-shard-size", "200KB"]  # "dir/" too
    alone = one_process(tmp_path, args)
    shared = tmp_path / "shared"
    shared.mkdir()
    results = run_job(job, 3, args, cwd=shared)
    assert all(code == 0 for code, *_ in results), [err for *_, err, _ in results]
    names = sorted(p.name for p in (alone / "ckpt").iterdir())
    assert len([n for n in names if n.startswith("model-")]) >= 3
    assert names == sorted(p.name for p in (shared / "ckpt").iterdir())
    for name in names:
        assert (shared / "ckpt" / name).read_bytes() == (alone / "ckpt" / name).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--quantize", "fp8-block"], ["--quantize", "ct-nvfp4"]])
def test_an_hf_folder_is_byte_identical_to_one_process(tmp_path, job, extra):
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "model_type": "llama",
                "vocab_size": 4096,
                "hidden_size": 256,
                "intermediate_size": 512,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "pad_token_id": 0,
            }
        )
    )
    args = ["hf", str(config), "-o", "llama", "-q", "--dtype", "bfloat16", *extra]
    alone = one_process(tmp_path, args)
    shared = tmp_path / "shared"
    shared.mkdir()
    results = run_job(job, 2, args, cwd=shared)
    assert all(code == 0 for code, *_ in results), [err for *_, err, _ in results]
    for name in ("config.json", "model.safetensors", "weightgen.manifest.json"):
        assert (shared / "llama" / name).read_bytes() == (alone / "llama" / name).read_bytes()


@pytest.mark.slow
def test_cluster_auto_under_a_slurm_step(tmp_path, job):
    """JAX's own detection: SLURM's variables name the step's nodes, tasks and ranks."""
    spec = spec_file(tmp_path)
    args = ["run", str(spec), "-o", "m.safetensors", "-q", "--cluster", "auto"]
    alone = one_process(tmp_path, ["run", str(spec), "-o", "m.safetensors", "-q"])
    for attempt in range(2):  # JAX derives the port from the job id: retry once if taken
        job_id = 100_000 + free_port()
        port = job_id % 2**12 + (65535 - 2**12 + 1)
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                continue
        shared = tmp_path / f"shared{attempt}"
        shared.mkdir()

        def slurm(pid, job_id=job_id):
            env = {
                "SLURM_JOB_ID": str(job_id),
                "SLURM_STEP_NODELIST": "localhost",
                "SLURM_NTASKS": "2",
                "SLURM_PROCID": str(pid),
                "SLURM_LOCALID": str(pid),
            }
            return {"env": env, "no_cluster_args": True}

        results = job.start(2, args, cwd=shared, per_process=slurm).wait()
        if all(code == 0 for code, *_ in results):
            break
    assert all(code == 0 for code, *_ in results), [err for *_, err, _ in results]
    assert (shared / "m.safetensors").read_bytes() == (alone / "m.safetensors").read_bytes()


# --- refusals before any work --------------------------------------------------------------


@pytest.mark.slow
def test_mismatched_plans_are_refused_naming_process_and_field(tmp_path, job):
    other = json.loads(json.dumps(SPEC))
    other["seed"] = 12

    def plans(pid):
        spec = spec_file(tmp_path, SPEC if pid == 0 else other, f"spec{pid}.json")
        return {"args": ["run", str(spec), "-o", "m.safetensors", "-q"]}

    results = run_job(job, 3, None, per_process=plans)
    assert all(code == 2 for code, *_ in results), [err for *_, err, _ in results]
    assert "disagree on the plan (spec or config, seed, dtype): process 0 has" in results[0][2]
    assert "process 1 has" in results[0][2]
    assert all(err.count("\n") == 1 and "Traceback" not in err for _, _, err, _ in results)
    assert not (tmp_path / "m.safetensors").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("output", "extra"),
    [("m.npz", []), ("m.h5", []), ("-", ["--format", "safetensors"])],
)
def test_formats_that_cannot_be_shared_are_refused_at_once(tmp_path, output, extra):
    """npz, HDF5 and stdout are refused before any coordination: one process, alone, at once."""
    command = [
        sys.executable,
        "-m",
        "weightgen",
        "run",
        str(spec_file(tmp_path)),
        "-o",
        output,
        *extra,
        "--coordinator-address",
        f"127.0.0.1:{free_port()}",
        "--num-processes",
        "2",
        "--process-id",
        "1",
        "--no-manifest",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=LIMIT)
    assert done.returncode == 2, done.stderr
    assert "cannot be written by several processes" in done.stderr
    assert "write safetensors instead" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.json"]


@pytest.mark.slow
def test_an_unshared_output_folder_is_refused(tmp_path, job):
    """Each process sees its own folder at the same (relative) path: not shared."""
    spec = spec_file(tmp_path)
    folders = [tmp_path / "host0", tmp_path / "host1"]
    for folder in folders:
        folder.mkdir()
    results = run_job(
        job,
        2,
        ["run", str(spec), "-o", "m.safetensors"],
        per_process=lambda pid: {"cwd": folders[pid]},
    )
    assert all(code != 0 for code, *_ in results)
    assert "the output folder '.' is not shared" in results[1][2]
    assert "process 1: the output folder '.' is not shared" in results[0][2]
    for folder in folders:
        assert list(folder.iterdir()) == []


# --- failures: a peer killed or terminated mid-write ----------------------------------------

BIG = {"seed": 1, "tensors": {"w": {"init": "normal", "shape": [4096, 8192]}}}  # 128 MiB


def _mid_write(tmp_path: Path, job: Job, victim: int, how: int, *, hang: bool = False):
    """Start 3 processes writing over an old file; once the writing has begun, stop
    ``victim`` with signal ``how``. With ``hang``, the victim's writes stop returning 4 MiB
    into its share (HANGING_WRITES) and the signal goes when it is there: the others cannot
    have committed, however fast the host. Without, the signal goes 0.5 s after the
    temporary output appears (a process that must unwind its writer cannot be hung)."""
    spec = spec_file(tmp_path, BIG)
    (tmp_path / "m.safetensors").write_bytes(b"the old file")
    marker = tmp_path / "hung"

    def per_process(pid: int) -> dict:
        if not hang or pid != victim:
            return {}
        return {"launcher": ["-c", HANGING_WRITES.format(marker=str(marker)) + RUN_WEIGHTGEN]}

    # Small chunks keep the processes busy for seconds on a small tensor.
    chunk = "65536" if hang else "2048"
    args = ["run", str(spec), "-o", "m.safetensors", "--force", "--chunk-size", chunk]
    job.start(3, args, per_process=per_process)
    begun = marker.exists if hang else lambda: bool(leftovers(tmp_path))
    deadline = time.monotonic() + LIMIT / 2
    while not begun() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert begun(), "the shared run never started writing"
    if not hang:
        time.sleep(0.5)
    assert all(p.poll() is None for p in job.procs), "the run ended before the failure"
    stopped = time.monotonic()
    os.kill(job.procs[victim].pid, how)
    results = job.wait()
    return results, stopped - job.started


@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 1])
def test_a_killed_process_stops_every_process_and_commits_nothing(tmp_path, job, victim):
    results, killed_at = _mid_write(tmp_path, job, victim, signal.SIGKILL, hang=True)
    assert results[victim][0] == -signal.SIGKILL
    for pid, (code, _, err, ended) in enumerate(results):
        if pid == victim:
            continue
        assert code == 1, err
        assert ended - killed_at < 2 * TIMEOUT + 3, ended - killed_at  # within the bound
        assert err.count("\n") == 1 and "nothing was committed" in err, err
    assert (tmp_path / "m.safetensors").read_bytes() == b"the old file"
    if victim != 0:  # process 0 removes the temporary; if it was the one killed, the next run
        assert leftovers(tmp_path) == []
    else:
        weightgen.run_spec(str(spec_file(tmp_path, BIG)), tmp_path / "next.safetensors")
        assert leftovers(tmp_path) == []  # ...removes what the dead process left


@pytest.mark.slow
def test_sigterm_stops_every_process_cleanly(tmp_path, job):
    results, _ = _mid_write(tmp_path, job, 2, signal.SIGTERM)
    assert results[2][0] == 143 and "terminated (SIGTERM)" in results[2][2]
    for code, _, err, _ in results[:2]:
        assert code == 1 and "process 2 was terminated (SIGTERM); nothing was committed" in err
    assert (tmp_path / "m.safetensors").read_bytes() == b"the old file"
    assert leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "point, victim, signum",
    [
        ("planning", 1, signal.SIGTERM),  # as it publishes what it was asked
        ("generating", 1, signal.SIGHUP),  # from outside, once the writing has begun
        ("generating", 0, signal.SIGTERM),
        ("committing", 0, signal.SIGTERM),  # the leader, before its renames
    ],
)
def test_a_signal_in_a_two_process_run_stops_both_cleanly(tmp_path, job, point, victim, signum):
    """Each process signalled at a point of its work: it ends as it would alone (one line,
    128 + the signal), the other stops within the bound as for a killed peer, nothing is
    committed and no temporary is left."""
    spec = spec_file(tmp_path, BIG)
    (tmp_path / "m.safetensors").write_bytes(b"the old file")
    hooks = {"planning": "weightgen.hosts:agreement", "committing": "weightgen.output:Target.sync"}
    args = ["run", str(spec), "-o", "m.safetensors", "--force", "--chunk-size", "2048"]

    def per_process(pid: int) -> dict:
        if pid != victim or point not in hooks:
            return {}
        return {"launcher": ["-c", SIGNAL_HOOK], "env": {"SIGNAL_AT": f"{hooks[point]}={signum}"}}

    job.start(2, args, per_process=per_process)
    signalled = time.monotonic()
    if point == "generating":
        deadline = time.monotonic() + LIMIT / 2
        while not leftovers(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert all(p.poll() is None for p in job.procs), "the run ended before the signal"
        signalled = time.monotonic()
        os.kill(job.procs[victim].pid, signum)
    results = job.wait()
    name = signal.Signals(signum).name
    code, _, err, _ = results[victim]
    assert code == 128 + signum, err
    assert err == f"weightgen: error: terminated ({name}); no output was written\n"
    other, _, err, ended = results[1 - victim]
    assert other == 1, err
    assert f"process {victim} was terminated ({name}); nothing was committed" in err, err
    assert err.count("\n") == 1, err
    assert ended - (signalled - job.started) < 2 * TIMEOUT + 3
    assert (tmp_path / "m.safetensors").read_bytes() == b"the old file"
    assert leftovers(tmp_path) == []


# --- a stuck process: its watcher beats, its work does not move ----------------------------

# Launchers for one process of a job: `python -c CODE ARGS` runs weightgen after CODE has
# replaced os.pwrite (and, for a slow QR, jax.nn.initializers.orthogonal) in that process
# only. Nothing in weightgen knows about them.
RUN_WEIGHTGEN = "\nfrom weightgen.cli import main\nmain()\n"

HANGING_WRITES = """
import os, threading
_pwrite, _first = os.pwrite, []
def pwrite(fd, data, offset):
    if not _first and len(data) >= 1 << 16:
        _first.append(offset)  # where this process's share begins
    if _first and offset >= _first[0] + (4 << 20):  # 4 MiB into it: never returns
        open({marker!r}, "a").close()  # tells the test when
        threading.Event().wait()
    return _pwrite(fd, data, offset)
os.pwrite = pwrite
"""

SLOW_WORK = """
import os, time
import jax.nn.initializers
_pwrite, _orthogonal = os.pwrite, jax.nn.initializers.orthogonal
def pwrite(fd, data, offset):
    if len(data) >= 1 << 20:
        time.sleep({write_delay})
    return _pwrite(fd, data, offset)
def orthogonal(*args, **kwargs):
    init = _orthogonal(*args, **kwargs)
    def slow(*a, **k):
        time.sleep({qr_delay})
        return init(*a, **k)
    return slow
os.pwrite, jax.nn.initializers.orthogonal = pwrite, orthogonal
"""


@pytest.mark.slow
def test_a_process_stuck_in_a_write_stops_every_other_process(tmp_path, job):
    """Process 1's writes stop returning 4 MiB into its share (its watcher still beats): the
    others stop within --distributed-timeout of its last progress, naming it; nothing is
    committed, and process 0 removes the temporary output. Process 1 itself cannot unwind
    (a thread never returns); JAX's coordination client ends it once the others are gone."""
    huge = {"seed": 1, "tensors": {"w": {"init": "normal", "shape": [8192, 8192]}}}  # 256 MiB
    spec = spec_file(tmp_path, huge)
    (tmp_path / "m.safetensors").write_bytes(b"the old file")
    marker = tmp_path / "hung"

    def hang(pid):
        if pid != 1:
            return {}
        return {"launcher": ["-c", HANGING_WRITES.format(marker=str(marker)) + RUN_WEIGHTGEN]}

    # Small chunks, and a share (80 MiB) larger than what the writer's buffers and queue hold:
    # process 1 stops while generating and writing, not in its final fsync.
    args = ["run", str(spec), "-o", "m.safetensors", "--force", "--chunk-size", "65536"]
    job.start(3, args, per_process=hang)
    deadline = time.monotonic() + LIMIT / 2
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), [p.poll() for p in job.procs]
    hung_at = time.monotonic() - job.started
    results = []
    for proc in (job.procs[0], job.procs[2]):
        _, err = proc.communicate(timeout=LIMIT)
        results.append((proc.returncode, err, time.monotonic() - job.started))
    for code, err, ended in results:
        assert code == 1, err
        assert ended - hung_at < 2 * TIMEOUT + 3, (ended - hung_at, err)  # within the bound
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert "process 1 made no progress for" in err and "at tensor 'w'" in err, err
        assert "nothing was committed" in err, err
    assert (tmp_path / "m.safetensors").read_bytes() == b"the old file"
    assert leftovers(tmp_path) == []
    assert job.procs[1].wait(timeout=3 * TIMEOUT + 10) != 0


@pytest.mark.slow
def test_a_slow_process_whose_work_moves_is_not_stopped(tmp_path, job):
    """Process 1's QR takes longer than --distributed-timeout (its allowance covers it), and
    its writes take 0.6 s each, longer than the timeout in all: the job succeeds."""
    document = {
        "seed": 5,
        "tensors": {
            "a": {"init": "normal", "shape": [4096, 4096]},  # 64 MiB: process 0's share
            "b": {"init": "orthogonal", "shape": [256, 256]},  # process 1: b, then c
            "c": {"init": "normal", "shape": [16320, 1024]},
        },
    }
    spec = spec_file(tmp_path, document)
    from weightgen.specfile import load_spec

    shares = load_spec(str(spec)).plan.shares(2, 16 << 20)
    assert [[r.index for r in share] for share in shares] == [[0], [1, 2]]
    slow = SLOW_WORK.format(write_delay=0.6, qr_delay=1.5 * TIMEOUT) + RUN_WEIGHTGEN
    args = ["run", str(spec), "-o", "m.safetensors", "--json", "--chunk-size", str(2**21)]
    results = run_job(
        job, 2, args, per_process=lambda pid: {"launcher": ["-c", slow]} if pid == 1 else {}
    )
    assert all(code == 0 for code, *_ in results), [err for *_, err, _ in results]
    assert json.loads(results[1][1])["seconds"] > 2 * TIMEOUT  # its share: slow in all
    assert weightgen.verify(None, tmp_path / "m.safetensors") == []


def test_step_allowances_cover_compiling_and_a_qr_growing_with_its_size():
    from weightgen import hosts

    def allowance(init, shape):
        return hosts.step_allowance(make_tensor(init, shape))

    assert allowance("normal", (1 << 15, 1 << 15)) == hosts.STEP_SECONDS
    small, big = allowance("orthogonal", (1024, 1024)), allowance("orthogonal", (4096, 4096))
    assert hosts.STEP_SECONDS < small < big
    assert big - hosts.STEP_SECONDS > 32 * (small - hosts.STEP_SECONDS)  # ~n**3
    # A delta-orthogonal kernel's QR is of its (in, out) matrix, not of its spatial extent.
    assert allowance("delta-orthogonal", (9, 9, 64, 64)) < allowance("orthogonal", (576, 576))


def test_a_range_begun_keeps_its_allowance_until_its_own_chunks_are_queued():
    """Dispatch runs ahead of landing: after the loop begins range 1, chunks of range 0 are
    still being queued. Range 1's allowance (its QR, which runs asynchronously and so shows
    when its first chunk lands) holds through those and ends with its own first chunk."""
    import threading

    import jax

    from weightgen import engine as engine_mod
    from weightgen import hosts

    events = []

    class Record:
        def began(self, number):
            events.append(("began", number))

        def queued(self, number):
            events.append(("queued", number))

    class Discard:
        def write(self, index, offset, chunk):
            pass

    plan = Plan.of(
        [make_tensor("normal", (64, 64), name="a"), make_tensor("orthogonal", (32, 64), name="b")]
    )
    engine = engine_mod.Engine(jax.devices()[:1], 256)  # a: 16 chunks, 3 in flight
    engine_mod.run(engine, plan, Discard(), clock=Record())
    begun_b = events.index(("began", 1))
    assert ("queued", 0) in events[begun_b:], events  # a's chunks land after b begins

    team = hosts.Team.__new__(hosts.Team)  # the clock alone, without a cluster
    team._steps = [("a", 1.0), ("b", 99.0)]
    team._generating, team._tick, team._tick_lock = -1, (0, 0.0), threading.Lock()
    allowances = []
    for event, number in events:
        getattr(team, event)(number)
        allowances.append(team._tick[1])
    first_b = events.index(("queued", 1))
    assert set(allowances[begun_b:first_b]) == {99.0}, (events, allowances)
    assert allowances[first_b] == 0.0
    assert team._tick[0] == len(events)  # every event ticked


# --- pure pieces ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--num-processes", "2"], "go together"),
        (
            ["--coordinator-address", "h:1", "--num-processes", "2", "--process-id", "2"],
            "--process-id 2: must be from 0 to --num-processes - 1 (1)",
        ),
        (
            ["--coordinator-address", "nohost", "--num-processes", "2", "--process-id", "0"],
            "expected HOST:PORT",
        ),
        (["--cluster", "auto", "--distributed-timeout", "0"], "positive number of seconds"),
    ],
)
def test_cluster_options_are_checked(run_cli, tmp_path, args, fragment):
    result = run_cli("zeros", "--shape", "4", "-o", str(tmp_path / "z.safetensors"), *args)
    assert result.code == 2 and fragment in result.stderr, result.stderr


def test_cluster_options_come_from_the_environment_too(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("WEIGHTGEN_NUM_PROCESSES", "2")
    result = run_cli("zeros", "--shape", "4", "-o", str(tmp_path / "z.safetensors"))
    assert result.code == 2 and "go together" in result.stderr


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(0, 5000), st.booleans()), min_size=1, max_size=8),
    count=st.integers(1, 7),
    block=st.sampled_from([8, 64, 1024]),
)
def test_shares_cover_every_byte_once_at_block_boundaries(sizes, count, block):
    tensors = [
        make_tensor(
            "orthogonal" if whole and n > 1 else "normal",
            (n, 2) if whole and n > 1 else (n,),
            name=f"t{i:02d}",
        )
        for i, (n, whole) in enumerate(sizes)
    ]
    plan = Plan.of(tensors)
    shares = plan.shares(count, block)
    assert len(shares) == count
    covered = {i: [] for i in range(len(plan.tensors))}
    for share in shares:
        for r in share:
            covered[r.index].append((r.start, r.stop))
            assert (r.start * 4) % block == 0  # each writer hashes whole blocks
            if not plan.tensors[r.index].init.elementwise:
                assert (r.start, r.stop) == (0, plan.tensors[r.index].numel)
    for index, ranges in covered.items():
        ranges.sort()
        position = 0
        for start, stop in ranges:
            assert start == position and stop > start
            position = stop
        assert position == plan.tensors[index].numel
    whole = max((t.nbytes for t in plan.tensors if not t.init.elementwise), default=0)
    fair = plan.nbytes / count
    for share in shares:  # balanced within a block (or one whole tensor) of a fair share
        nbytes = sum((r.stop - r.start) * 4 for r in share)
        assert abs(nbytes - fair) <= max(block, whole) * 2 + 4


def test_stale_temporaries_are_judged_by_host_boot_and_pid(tmp_path):
    host, _boot = atomic.HOST_TAG.split("~")
    dead = 2**22 + 12345  # beyond any pid this test machine hands out
    old = time.time() - 2 * atomic.ABANDONED_AFTER
    names = {
        f".m.x1.{dead}@{atomic.HOST_TAG}.weightgen-tmp": ("removed", None),  # here, dead
        f".m.x2.{os.getpid()}@{atomic.HOST_TAG}.weightgen-tmp": ("kept", None),  # here, alive
        f".m.x3.{os.getpid()}@{host}~other.weightgen-tmp": ("removed", None),  # here, rebooted
        f".m.x4.{dead}@elsewhere~1234.weightgen-tmp": ("kept", None),  # another host's
        f".m.x5.{dead}@elsewhere~1234.weightgen-tmp": ("removed", old),  # ...abandoned
        f".m.x6.{dead}.weightgen-tmp": ("removed", None),  # weightgen 0.1.0's, dead
    }
    for name, (_, mtime) in names.items():
        (tmp_path / name).write_bytes(b"x")
        if mtime:
            os.utime(tmp_path / name, (mtime, mtime))
    removed = atomic.clean_stale(tmp_path)
    assert sorted(removed) == sorted(n for n, (fate, _) in names.items() if fate == "removed")


@pytest.mark.slow
def test_a_missing_process_stops_start_up_within_the_timeout(tmp_path, job):
    spec = spec_file(tmp_path)
    job.start(2, ["run", str(spec), "-o", "m.safetensors", "-q"])
    os.killpg(job.procs[1].pid, signal.SIGKILL)  # process 1 never joins
    code, _, err, seconds = job.wait()[0]
    assert code == 1 and seconds < 2 * TIMEOUT + 10, (seconds, err)
    assert "process 0 of 2 could not join the job" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.json"]


@pytest.mark.slow
def test_an_existing_destination_is_refused_by_every_process(tmp_path, job):
    spec = spec_file(tmp_path)
    (tmp_path / "m.safetensors").write_bytes(b"mine")
    results = run_job(job, 2, ["run", str(spec), "-o", "m.safetensors", "-q"])
    for code, _, err, _ in results:
        assert code == 1 and "exists; pass --force (force=True in Python)" in err, err
    assert (tmp_path / "m.safetensors").read_bytes() == b"mine"
