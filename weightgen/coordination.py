"""The one door to JAX's coordination service: the engine behind ``jax.distributed`` that JAX
jobs already run under SLURM, Open MPI or Kubernetes (process ids, a key-value store,
barriers, heartbeats). Everything weightgen reaches through a private path of JAX is here,
so a JAX upgrade touches this file only. Checked against jax and jaxlib 0.10.2.

Why not ``jax.distributed.initialize`` itself: it starts the same service and client, but
runs the service inside process 0, so that process 0's death takes it down and every other
client aborts at once (a C++ fatal error and a stack trace, measured with jax 0.10.2); its
client waits minutes on shutdown and aborts when the service reports a dead peer; and it
starts JAX's preemption service, which swallows SIGTERM. weightgen starts the same service
in a small child process of process 0 (``_SERVICE``: jaxlib alone), which outlives
process 0 long enough for the others to notice its death and leave cleanly, and the same
client with its own timeouts; it notices a dead peer itself (hosts.Watcher) well before the
service would. ``--cluster auto`` uses JAX's own cluster detection. The backend is left
alone: each process generates on its local devices only.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from .errors import UsageError, WeightgenError

CHECKED_WITH = "0.10.2"
# Set when a session ended in failure: the process should then end at once (os._exit),
# since tearing the coordination client down normally waits for peers that may be gone.
ABANDONED = threading.Event()
PART_BYTES = 1 << 20  # values larger than this are stored in parts (gRPC caps a message)


class CoordinationError(WeightgenError):
    """The coordination service failed: a peer is gone, a wait timed out, a call failed."""


@dataclass(frozen=True)
class Cluster:
    """How to reach the job's processes: given outright, or detected (``--cluster auto``)."""

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    auto: bool = False
    timeout: float = 60.0  # start-up, waits for a peer, and a dead peer's detection

    def resolve(self) -> Cluster:
        """All three fields, from JAX's cluster detection where ``auto``."""
        if not self.auto:
            return self
        from jax._src import clusters

        try:
            address, count, rank, _ = clusters.ClusterEnv.auto_detect_unset_distributed_params(
                self.coordinator_address,
                self.num_processes,
                self.process_id,
                None,
                None,
                int(self.timeout),
            )
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UsageError(f"--cluster auto: {exc}") from None
        if address is None or count is None or rank is None:
            raise UsageError(
                "--cluster auto found no cluster (SLURM, Open MPI, Kubernetes or a TPU pod); "
                "give --coordinator-address, --num-processes and --process-id"
            )
        return Cluster(address, int(count), int(rank), False, self.timeout)


def _exempt_from_proxy(address: str) -> None:
    """gRPC honours http_proxy: a proxy in the environment would carry (and break) the
    connection to the coordinator. Exempt its host."""
    host = address.rsplit(":", 1)[0].strip("[]")
    for name in ("no_proxy", "NO_PROXY", "no_grpc_proxy"):
        current = [h for h in os.environ.get(name, "").split(",") if h]
        if host not in current:
            os.environ[name] = ",".join([*current, host])


def _error(exc: Exception, doing: str) -> CoordinationError:
    text = str(exc).split("\n", 1)[0]
    if len(text) > 300:
        text = text[:297] + "..."
    return CoordinationError(f"{doing}: {text}")


class Session:
    """One process's connection to the job; process 0 also starts the service."""

    def __init__(self, cluster: Cluster):
        self.process_id = cluster.process_id
        self.num_processes = cluster.num_processes
        self.timeout = cluster.timeout
        address = cluster.coordinator_address
        _exempt_from_proxy(address)
        seconds = max(1, int(cluster.timeout))
        self._service: subprocess.Popen | None = None
        self._client = None
        if self.process_id == 0:  # first: it starts while this process imports JAX
            self._service = _start_service(address, self.num_processes, seconds)
        # Through jax, not jaxlib alone: importing jax quiets the C++ client's INFO logs.
        from jax._src.lib import _jax

        self._client = _jax.get_distributed_runtime_client(
            address,
            self.process_id,
            # The client aborts the process when its own start-up deadline passes: so it
            # waits ten times longer than this process does (below), and never gets there.
            init_timeout=10 * seconds,
            shutdown_timeout=seconds,
            # JAX's own dead-peer detection (which aborts processes too) comes well after
            # weightgen's (hosts.Watcher, after `timeout`): it is only a backstop.
            heartbeat_timeout=3 * seconds,
            shutdown_on_destruction=False,
            use_compression=True,
        )
        self._connect(address, seconds)

    def _connect(self, address: str, seconds: int) -> None:
        """Join the job (every process must), waiting at most ``seconds``; on a thread, so
        that giving up is a clean error rather than the client's abort."""
        failure: list[BaseException] = []

        def connect() -> None:
            try:
                self._client.connect()
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=connect, name="weightgen-connect", daemon=True)
        thread.start()
        deadline = time.monotonic() + seconds
        while thread.is_alive() and time.monotonic() < deadline:
            thread.join(0.05)
            reason = _service_error(self._service)
            if reason is not None:
                self.abandon()
                raise CoordinationError(
                    f"cannot start the coordination service on port "
                    f"{address.rsplit(':', 1)[1]}: {reason}"
                )
        if thread.is_alive() or failure:
            self.abandon()
            detail = f": {str(failure[0]).splitlines()[0]}" if failure else ""
            raise CoordinationError(
                f"process {self.process_id} of {self.num_processes} could not join the job at "
                f"{address} within {seconds} s (are all processes started, with the same "
                f"--coordinator-address and --num-processes?){detail}"
            )

    # --- the key-value store ---------------------------------------------------------------

    def set(self, key: str, value: str | bytes) -> None:
        data = value.encode("utf-8") if isinstance(value, str) else value
        try:
            if len(data) <= PART_BYTES:
                self._client.key_value_set_bytes(key, data, allow_overwrite=True)
                return
            parts = range(0, len(data), PART_BYTES)
            for i, start in enumerate(parts):
                part = data[start : start + PART_BYTES]
                self._client.key_value_set_bytes(f"{key}/part{i}", part, allow_overwrite=True)
            self._client.key_value_set_bytes(key, f"parts:{len(parts)}".encode(), True)
        except Exception as exc:
            raise _error(exc, f"cannot store {key!r} in the coordination service") from None

    def get(self, key: str, timeout: float) -> bytes | None:
        """The value of ``key``, waiting up to ``timeout`` seconds; None if it never came."""
        try:
            data = self._client.blocking_key_value_get_bytes(key, max(1, int(timeout * 1000)))
        except Exception as exc:
            if "DEADLINE_EXCEEDED" in str(exc) or "deadline" in str(exc).lower():
                return None
            raise _error(exc, f"cannot read {key!r} from the coordination service") from None
        return self._joined(key, data)

    def try_get(self, key: str) -> bytes | None:
        try:
            data = self._client.key_value_try_get_bytes(key)
        except Exception as exc:
            if "NOT_FOUND" in str(exc) or "not found" in str(exc).lower():
                return None
            raise _error(exc, f"cannot read {key!r} from the coordination service") from None
        return self._joined(key, data)

    def _joined(self, key: str, data: bytes) -> bytes:
        if not data.startswith(b"parts:"):
            return data
        count = int(data[len(b"parts:") :])
        parts = [self._client.key_value_try_get_bytes(f"{key}/part{i}") for i in range(count)]
        return b"".join(parts)

    def dir_get(self, prefix: str) -> dict[str, str]:
        try:
            return dict(self._client.key_value_dir_get(prefix))
        except Exception as exc:
            raise _error(exc, "the coordination service stopped answering") from None

    def barrier(self, name: str, timeout: float) -> None:
        try:
            self._client.wait_at_barrier(name, max(1, int(timeout * 1000)))
        except Exception as exc:
            raise _error(
                exc, f"not every process reached {name!r} within {timeout:.0f} s"
            ) from None

    # --- the end --------------------------------------------------------------------------

    def close(self) -> None:
        """A clean end, every process alive: shut the client down (a barrier of every
        process), then the service."""
        try:
            self._client.shutdown()
        except Exception as exc:
            self.abandon()
            raise _error(exc, "shutting the coordination client down") from None
        self._stop_service("done")

    def abandon(self) -> None:
        """After a failure: leave without waiting for peers that may be gone. The service
        stays a moment longer, so that the others still reach it while they leave. The
        process should end soon (ABANDONED): JAX's client aborts it later otherwise."""
        ABANDONED.set()
        self._stop_service("failed")

    def _stop_service(self, how: str) -> None:
        service, self._service = self._service, None
        if service is None:
            return
        with contextlib.suppress(OSError, ValueError):
            service.stdin.write(f"{how}\n".encode())
            service.stdin.close()


# The service process (``python -c``, importing jaxlib alone: it starts in a fifth of a
# second): it listens until process 0 says how the job ended, then stays a moment (the others
# are closing their clients, or leaving after a failure) or longer (no word: process 0 died,
# and the others notice within `seconds`) before leaving, without the service's own teardown
# (it may wait for clients that are gone).
_SERVICE = """
import os, sys, time
from jaxlib import _jax
bind, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    service = _jax.get_distributed_runtime_service(
        bind, count, heartbeat_timeout=3 * seconds, shutdown_timeout=seconds)
except Exception as exc:
    print("error: " + (str(exc).splitlines() or [repr(exc)])[0], flush=True)
    sys.exit(1)
print("ready", flush=True)
word = sys.stdin.readline().strip()
# Done: the others are closing their clients (a client that loses the service aborts).
time.sleep({"done": 2, "failed": min(5, seconds)}.get(word, seconds + 5))
os._exit(0)
"""


def _start_service(address: str, count: int, seconds: int) -> subprocess.Popen:
    """Start the coordination service in a child process of its own session (a Ctrl-C for
    the job does not reach it); the clients wait for it to listen (``connect``)."""
    port = address.rsplit(":", 1)[1]
    return subprocess.Popen(
        [sys.executable, "-c", _SERVICE, f"[::]:{port}", str(count), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the service's own logs would only repeat our messages
        start_new_session=True,
    )


def _service_error(service: subprocess.Popen | None) -> str | None:
    """Why the service process ended, if it did (it could not listen: a port in use)."""
    if service is None or service.poll() is None:
        return None
    line = service.stdout.readline().decode(errors="replace").strip()
    return line.removeprefix("error: ") or f"it exited with code {service.returncode}"


def cluster_of(
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    cluster: str | None,
    timeout: float,
) -> Cluster | None:
    """The job this process belongs to, from the command line (or WEIGHTGEN_* variables):
    all three of address, count and id, or ``--cluster auto``, or none (one process)."""
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if not timeout > 0:
        raise UsageError(f"--distributed-timeout {timeout}: must be a positive number of seconds")
    if cluster is None and not any(given):
        return None
    if cluster is None and not all(given):
        raise UsageError(
            "--coordinator-address, --num-processes and --process-id go together (or set "
            "WEIGHTGEN_COORDINATOR_ADDRESS, WEIGHTGEN_NUM_PROCESSES, WEIGHTGEN_PROCESS_ID), "
            "or use --cluster auto"
        )
    if coordinator_address is not None:
        host, _, port = coordinator_address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(
                f"--coordinator-address {coordinator_address}: expected HOST:PORT, "
                "e.g. node0:29500 or 10.0.0.1:29500"
            )
    if num_processes is not None and num_processes < 1:
        raise UsageError(f"--num-processes {num_processes}: must be at least 1")
    if process_id is not None and not 0 <= process_id < (num_processes or 2**31):
        raise UsageError(
            f"--process-id {process_id}: must be from 0 to --num-processes - 1"
            + (f" ({num_processes - 1})" if num_processes else "")
        )
    return Cluster(coordinator_address, num_processes, process_id, cluster == "auto", timeout)
