"""Many hosts: every process of a job writes its share of one output, coordinated through
JAX's coordination service (coordination.py), and the result is byte for byte what one
process writes.

``write`` (api.py) runs the same steps whatever the number of processes; it asks a
coordinator what its share is and what the others did. ``Solo`` is the coordinator of a
single process (every step trivial); ``Team`` is one member of a job:

1. agreement: every process publishes digests of what it was asked (plan, output, options,
   versions); the leader (process 0) compares them and names any process and field that
   differ;
2. the leader checks the destination (``--force``, free space), creates the temporary output
   (headers written, files sized) and publishes where it is; every process opens it, which
   also proves the folder is shared;
3. every process generates its share (``Plan.shares``: contiguous, balanced by bytes, cut at
   digest blocks) on its own devices, writes it with ``pwrite`` and fsyncs its descriptor,
   hashing as it writes;
4. every process publishes its block digests and figures; the leader assembles the digests
   (no byte is read back), writes the index, config and manifest, commits atomically, and
   publishes that it did.

A watcher thread in every process beats (its bytes written so far, and its progress clock)
and watches the others' beats and the job's abort key: a process that fails or is
interrupted publishes why; one that dies (SIGKILL) stops beating; one whose work is stuck (a
write that never returns on a hung filesystem) stops its clock while its watcher still
beats. Either way every other process notices within ``timeout`` seconds (a stuck one: plus
the allowance of the step it was in, see ``step_allowance``), stops, and exits non-zero;
nothing is committed, the leader removes the temporary output, and an existing destination
is left as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from .coordination import Cluster, CoordinationError, Session
from .errors import Terminated, UsageError, WeightgenError
from .plan import Plan, TensorRange, TensorSpec

PREFIX = "weightgen"

# The progress clock's allowances: how long one step of a process's work may take beyond
# --distributed-timeout before the process is taken for stuck (each next chunk, generated
# or written, gets none). Each long step has a fixed part, STEP_SECONDS: compiling a
# tensor's kernel for its first chunk, or an fsync's latency on a busy disk (well under a
# second; ten times that on a loaded host). An orthogonal tensor is computed whole before
# its first chunk: a QR of its matrix, at most 4 N**1.5 flops for N elements (a square
# matrix is the worst case), taken at 1 GFLOP/s (one loaded core did 14-30 here, jax
# 0.10.2, float32 and float64), and its N elements drawn and moved at 10 M/s. At the end,
# the last blocks and the fsync write out what the page cache or the direct writes still
# hold: at most the process's share, taken at 10 MB/s (a slow disk or network filesystem
# does 50-100 MB/s).
STEP_SECONDS = 10.0
QR_FLOPS_PER_SECOND = 1e9
WHOLE_ELEMENTS_PER_SECOND = 1e7
FLUSH_BYTES_PER_SECOND = 10e6


class PeerFailure(WeightgenError):
    """Another process of the job failed, was interrupted, or stopped answering."""


class Solo:
    """The coordinator of a run in one process: it is the leader, and alone."""

    leader = True
    process_id = 0
    count = 1
    stop: threading.Event | None = None

    def agree(self, fields: Callable[[], Mapping[str, str]]) -> None:
        pass

    def decide(self, step: str, leader_step: Callable[[], Any]) -> Any:
        return leader_step()

    def join(self, step: str, opened: str, follower_step: Callable[[str], Any]) -> None:
        pass

    def ranges(self, plan: Plan, block_bytes: int) -> list[TensorRange]:
        return [TensorRange(i, 0, t.numel) for i, t in enumerate(plan.tensors)]

    def gather(self, step: str, payload: bytes) -> list[bytes] | None:
        return [payload]

    def working(self) -> contextlib.AbstractContextManager:
        """Around generating, writing and the fsync (where a team watches the clock)."""
        return contextlib.nullcontext()

    def flushing(self) -> None:
        """Generating and writing are done; the fsync begins."""

    def wrote(self, number: int, nbytes: int) -> None:
        pass

    def committed(self, summary: bytes) -> bytes:
        return summary

    def check(self) -> None:
        pass

    def fail(self, exc: BaseException) -> None:
        pass


class Team(Solo):
    """One process of a job of several: see the module's docstring for the steps."""

    def __init__(self, cluster: Cluster, on_progress: Callable[[int], None] | None = None):
        cluster = cluster.resolve()
        self.session = Session(cluster)
        self.process_id = cluster.process_id
        self.count = cluster.num_processes
        self.leader = self.process_id == 0
        self.timeout = cluster.timeout
        self.stop = threading.Event()
        self.failure: str | None = None
        self._done = 0
        # The progress clock and the seconds the step under way may take beyond ``timeout``:
        # ticked by the generating loop (a range begun, chunks queued) and by the writer (a
        # chunk written), read by the watcher while ``_working``. One pair under one lock,
        # so the watcher never sees a new tick with an old allowance or the reverse.
        self._tick = (0, 0.0)
        self._tick_lock = threading.Lock()
        self._working = False
        self._steps: list[tuple[str, float]] = []  # per range: tensor name, first step's allowance
        self._generating = self._writing = -1  # the ranges each loop is at
        self._flushing = False
        self._failed_here = False
        try:
            if self.leader:
                self.run = uuid.uuid4().hex[:12]
                self.session.set(f"{PREFIX}/run", self.run)
            else:
                self.run = self._wait(f"{PREFIX}/run", "the run id from process 0").decode()
        except BaseException:
            self.session.abandon()
            raise
        self._watcher = Watcher(self, on_progress)
        self._watcher.start()

    def key(self, *parts: object) -> str:
        return "/".join([PREFIX, self.run, *map(str, parts)])

    def _wait(self, key: str, what: str, timeout: float | None = None) -> bytes:
        """A value the others publish: wait for it in short steps (a failure elsewhere stops
        the wait), at most ``timeout`` seconds (None: as long as the others are alive: the
        watcher's heartbeats bound a wait for a peer that died; a live peer's work, such as
        removing a dead run's temporaries on a slow filesystem, may take its time)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.check()
            step = 0.5 if deadline is None else min(0.5, max(0.0, deadline - time.monotonic()))
            value = self.session.get(key, step)
            if value is not None:
                return value
            if deadline is not None and time.monotonic() >= deadline:
                raise CoordinationError(
                    f"process {self.process_id} waited {timeout:.0f} s for {what}; "
                    "is every process running the same command?"
                )

    def check(self) -> None:
        """Raise if the job failed elsewhere."""
        if self.failure is not None:
            raise PeerFailure(self.failure)

    # --- the steps ------------------------------------------------------------------------

    def agree(self, fields: Callable[[], Mapping[str, str]]) -> None:
        mine = dict(fields())
        self.session.set(self.key("agree", self.process_id), json.dumps(mine))
        if self.leader:
            for other in range(1, self.count):
                theirs = json.loads(self._wait(self.key("agree", other), "agreement"))
                for name, value in mine.items():
                    if theirs.get(name) != value:
                        verdict = (
                            f"the processes disagree on {name}: process 0 has {_short(value)}, "
                            f"process {other} has {_short(theirs.get(name))}; run the same "
                            "command, with the same versions, on every process"
                        )
                        self.session.set(self.key("agreed"), "error:" + verdict)
                        raise UsageError(verdict)
            self.session.set(self.key("agreed"), "ok")
            return
        verdict = self._wait(self.key("agreed"), "agreement").decode()
        if verdict != "ok":
            raise UsageError(verdict.removeprefix("error:"))

    def decide(self, step: str, leader_step: Callable[[], Any]) -> Any:
        """The leader runs ``leader_step``; its error, if any, becomes everyone's."""
        if self.leader:
            try:
                result = leader_step()
            except WeightgenError as exc:
                self.session.set(self.key("decide", step), f"{type(exc).__name__}:{exc}")
                raise
            self.session.set(self.key("decide", step), "ok")
            return result
        verdict = self._wait(self.key("decide", step), f"process 0 to {step}")
        text = verdict.decode()
        if text != "ok":
            kind, _, message = text.partition(":")
            raise _error_class(kind)(message)
        return None

    def join(self, step: str, opened: str, follower_step: Callable[[str], Any]) -> None:
        """The leader publishes ``opened`` (what it created); every other process runs
        ``follower_step`` on it (opens it: proof that they share the folder) and reports;
        anyone's failure is everyone's."""
        if self.leader:
            self.session.set(self.key("join", step), opened)
        else:
            path = self._wait(self.key("join", step), f"process 0 to {step}")
            try:
                follower_step(path.decode())
            except (WeightgenError, OSError) as exc:
                self.session.set(self.key("joined", step, self.process_id), f"error:{exc}")
                raise
            self.session.set(self.key("joined", step, self.process_id), "ok")
            return
        for other in range(1, self.count):
            answer = self._wait(self.key("joined", step, other), f"process {other}")
            if answer != b"ok":
                raise WeightgenError(f"process {other}: {answer.decode().removeprefix('error:')}")

    def ranges(self, plan: Plan, block_bytes: int) -> list[TensorRange]:
        mine = plan.shares(self.count, block_bytes)[self.process_id]
        self._steps = [
            (plan.tensors[r.index].name, step_allowance(plan.tensors[r.index])) for r in mine
        ]
        return mine

    def gather(self, step: str, payload: bytes) -> list[bytes] | None:
        """Every process's ``payload``, in process order, at the leader (None elsewhere).
        Waits as long as the others are alive: their shares may take long."""
        self.session.set(self.key("gather", step, self.process_id), payload)
        if not self.leader:
            return None
        return [
            payload if other == 0 else self._wait(self.key("gather", step, other), step)
            for other in range(self.count)
        ]

    @contextlib.contextmanager
    def working(self):
        self._working = True
        try:
            yield
        finally:
            self._working = False

    def _advance(self, allowance: float | None = None) -> None:
        """Tick the clock; set the allowance, or keep it (None)."""
        with self._tick_lock:
            clock, kept = self._tick
            self._tick = (clock + 1, kept if allowance is None else allowance)

    def began(self, number: int) -> None:
        """The generating loop began dispatching range ``number``. Its first step may compile
        a kernel or run a QR; the allowance for it holds until a chunk of it is queued."""
        self._generating = number
        self._advance(self._steps[number][1])

    def queued(self, number: int) -> None:
        """The generating loop queued chunks for the writer, of ranges up to ``number``.
        Dispatch runs ahead of landing, so these may be an earlier range's: then the range
        begun keeps its allowance (its kernel may still be running)."""
        self._advance(0.0 if number >= self._generating else None)

    def flushing(self) -> None:
        self._flushing = True
        self._advance(STEP_SECONDS + self._done / FLUSH_BYTES_PER_SECOND)

    def wrote(self, number: int, nbytes: int) -> None:
        """The writer wrote ``nbytes`` of range ``number``."""
        self._done += nbytes
        self._writing = number
        self._advance()

    def beat(self, beat: int) -> str:
        """What the watcher publishes: a counter, bytes written, and while working the
        clock, its allowance and where the work is (space-separated; the last is free text)."""
        if not self._working:
            return f"{beat} {self._done}"
        with self._tick_lock:
            clock, allowance = self._tick
        return f"{beat} {self._done} {clock} {allowance:.1f} {self._where()}"

    def _where(self) -> str:
        if self._flushing:
            return "writing out its share (fsync)"
        names = [n for n, _ in self._steps]
        making = names[self._generating] if 0 <= self._generating < len(names) else None
        written = names[self._writing] if 0 <= self._writing < len(names) else None
        if making is None:
            return "before its first tensor"
        if written in (None, making):
            return f"at tensor {making!r}"
        return f"generating tensor {making!r}, last written {written!r}"

    def committed(self, summary: bytes) -> bytes:
        """The leader says it committed (with its summary); the others wait to hear it."""
        if self.leader:
            self.session.set(self.key("committed"), summary)
            return summary
        return self._wait(self.key("committed"), "process 0 to commit")

    def fail(self, exc: BaseException) -> None:
        """Tell the others why this process stops (unless it stops because of them)."""
        if isinstance(exc, PeerFailure) or self.failure is not None:
            return
        self._failed_here = True
        if isinstance(exc, KeyboardInterrupt):
            why = "was interrupted (SIGINT)"
        elif isinstance(exc, Terminated):
            why = f"was terminated ({signal.Signals(exc.signum).name})"
        else:
            why = f"failed: {exc}"
        with contextlib.suppress(CoordinationError):
            self.session.set(self.key("abort"), f"process {self.process_id} {why}")

    def close(self, *, ok: bool = True) -> None:
        """End this process's part. ``ok``: the output is committed, so a peer that dies
        now changes nothing (the clean shutdown is tried, and given up quietly)."""
        self._watcher.halt()
        if ok:
            try:
                self.session.close()
            except CoordinationError:
                self.session.abandon()
        else:
            self.session.abandon()


class Watcher(threading.Thread):
    """Beats for its process and watches the others' beats and the job's abort key.

    A beat is a counter, the process's bytes written so far and, while it generates and
    writes, its progress clock. A peer whose beat has not changed for ``timeout`` seconds is
    taken for dead; a process (this one too) whose clock has not moved for ``timeout``
    seconds plus the allowance of its step under way is taken for stuck, and the verdict is
    published (the stuck process hears it too). On a failure anywhere, ``team.stop`` is set
    (the engine stops between chunks) and ``team.failure`` says why. The leader's watcher
    also reports the whole job's progress.
    """

    def __init__(self, team: Team, on_progress: Callable[[int], None] | None):
        super().__init__(name="weightgen-watcher", daemon=True)
        self.team = team
        self.on_progress = on_progress
        self.interval = min(1.0, max(0.1, team.timeout / 10))
        self._halt = threading.Event()

    def halt(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def run(self) -> None:
        team, session = self.team, self.team.session
        seen: dict[str, tuple[str, float]] = {}
        moved: dict[int, tuple[str, float]] = {}  # process: (its clock, when seen to change)
        beat = 0
        while not self._halt.wait(self.interval):
            beat += 1
            try:
                session.set(team.key("beat", team.process_id), team.beat(beat))
                abort = session.try_get(team.key("abort"))
                beats = session.dir_get(team.key("beat") + "/")
            except CoordinationError as exc:
                if self._halt.is_set():
                    return
                if team.process_id:
                    self._trip(f"process 0 (which runs the coordination service) is gone: {exc}")
                else:
                    self._trip(str(exc))
                return
            if abort is not None:
                if not team._failed_here:
                    self._trip(abort.decode())
                return
            now = time.monotonic()
            total = 0
            for other in range(team.count):
                key = team.key("beat", other)
                value = beats.get(key)
                if value is not None:
                    total += int(value.split()[1])
                    stuck = self._stuck(other, value, now, moved)
                    if stuck is not None:
                        with contextlib.suppress(CoordinationError):
                            session.set(team.key("abort"), stuck)
                        self._trip(stuck)
                        return
                if other == team.process_id:
                    continue
                last = seen.get(key)
                if last is None or last[0] != value:
                    seen[key] = (value, now)
                elif now - last[1] > team.timeout:
                    self._trip(
                        f"process {other} stopped answering (no heartbeat for "
                        f"{team.timeout:.0f} s): it died or hangs"
                    )
                    return
            if self.on_progress is not None and team.leader:
                self.on_progress(total)

    def _stuck(
        self, process: int, value: str, now: float, moved: dict[int, tuple[str, float]]
    ) -> str | None:
        """Why ``process`` is stuck, if its clock (in its beat ``value``) has not moved for
        longer than its bound; times are this watcher's own (no clocks are compared)."""
        fields = value.split(" ", 4)
        if len(fields) < 5:  # not generating or writing now: nothing to judge
            moved.pop(process, None)
            return None
        clock, allowance, where = fields[2], float(fields[3]), fields[4]
        last = moved.get(process)
        if last is None or last[0] != clock:
            moved[process] = (clock, now)
            return None
        stalled = now - last[1]
        if stalled <= self.team.timeout + allowance:
            return None
        return (
            f"process {process} made no progress for {stalled:.0f} s ({where}): a write that "
            "never returns (a hung filesystem?) or a stuck device; if it is only slow, raise "
            "--distributed-timeout"
        )

    def _trip(self, why: str) -> None:
        self.team.failure = f"{why}; nothing was committed"
        self.team.stop.set()


def step_allowance(spec: TensorSpec) -> float:
    """Seconds beyond --distributed-timeout that the first step of generating ``spec`` may
    take: compiling its kernel, and for a tensor computed whole (orthogonal), its QR."""
    if spec.init.elementwise:
        return STEP_SECONDS
    matrix = spec.numel
    if spec.init.family == "delta_orthogonal":  # an orthogonal (in, out) at the centre
        matrix = spec.shape[-2] * spec.shape[-1]
    return (
        STEP_SECONDS
        + 4 * matrix**1.5 / QR_FLOPS_PER_SECOND
        + spec.numel / WHOLE_ELEMENTS_PER_SECOND
    )


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _error_class(name: str) -> type[WeightgenError]:
    from . import errors

    found = getattr(errors, name, None)
    if isinstance(found, type) and issubclass(found, WeightgenError):
        return found
    return WeightgenError


def agreement(plan: Plan, output: str, options: Mapping[str, Any], hf_config) -> dict:
    """What every process must agree on, field by field (digests for the large ones)."""
    import jax
    import jaxlib

    from .manifest import spec_entry
    from .version import __version__

    tensors = [{**spec_entry(t, own_seed=True), "fold_in": t.fold_in} for t in plan.tensors]
    plan_json = json.dumps({"tensors": tensors, "hf_config": hf_config}, sort_keys=True)
    return {
        "the plan (spec or config, seed, dtype)": hashlib.sha256(plan_json.encode()).hexdigest(),
        "the output path": output,  # as given; that every process sees it is checked next
        "the output options": json.dumps(dict(options), sort_keys=True, default=str),
        "the weightgen version": __version__,
        "the JAX version": f"jax {jax.__version__}, jaxlib {jaxlib.__version__}",
    }


def refuse_format(kind: str, fmt: str) -> None:
    """Only safetensors can be written at offsets by several processes."""
    if kind == "stdout" or fmt in ("npz", "hdf5"):
        what = "stdout" if kind == "stdout" else fmt
        raise UsageError(
            f"{what} cannot be written by several processes (its layout is only known as it "
            "is written, in order); write safetensors instead: a .safetensors file or a "
            "checkpoint folder (--max-shard-size), which one process can convert later"
        )
