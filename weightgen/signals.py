"""SIGTERM and SIGHUP end a write as Ctrl-C (SIGINT) does: the temporaries are removed, the
destination is left as it was, and the run ends with one line and 128 + the signal's number.

SIGTERM is what SLURM's time limits, Kubernetes and ``docker stop`` send; SIGHUP what a closed
terminal sends. Python's default for both is to die at once, leaving a temporary output that
only a later run removes. Here, while a write runs, the three signals become exceptions in
the main thread (``Terminated``; ``KeyboardInterrupt`` for SIGINT), so that the write's one
failure path (api.py) undoes what it started, and in a shared run tells the others (hosts.py).

Where an exception raised at an arbitrary instruction would leave something behind, a
signal waits: while the engine's threads generate and write (``stopping``: the engine stops
at its next chunk, then the signal is raised), while a temporary is created or removed, and
while the output and its manifest are renamed into place (``held``). Only signals left at
their default disposition are taken over, only in the main thread, and only while a write
runs (``ending_cleanly``): ``nohup``'s ignored SIGHUP stays ignored, a caller's own handler
stays in charge. A library caller whose process would have died of the signal still dies
of it, once the write has cleaned up (``redeliver``); the CLI exits with 128 + its number.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from .errors import Terminated

# The signals a write ends on, and the disposition each has when nobody took it over.
_DEFAULTS = {
    signal.SIGINT: signal.default_int_handler,
    signal.SIGTERM: signal.SIG_DFL,
}
if hasattr(signal, "SIGHUP"):  # not on Windows
    _DEFAULTS[signal.SIGHUP] = signal.SIG_DFL


class _State:
    """The one set of handlers (the main thread's): what they do now, and what came."""

    def __init__(self) -> None:
        self.installed: dict[int, object] = {}  # signal: the disposition it had before
        self.caught: int | None = None  # the first signal of this write
        self.pending = False  # caught while held or stopping, not raised yet
        self.waiting = 0  # depth of held/stopping sections: raise later, not now
        self.stop: threading.Event | None = None  # set when a signal comes while stopping


_STATE = _State()


def exception_for(signum: int) -> BaseException:
    """What a signal becomes: KeyboardInterrupt for SIGINT (as Python's own handler does),
    Terminated for the others."""
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return Terminated(signum)


def _handle(signum: int, frame) -> None:
    state = _STATE
    if state.caught is not None:  # the run is already ending: a second signal changes nothing
        return
    state.caught = signum
    if state.waiting:
        state.pending = True
        if state.stop is not None:
            state.stop.set()
        return
    raise exception_for(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def ending_cleanly(*, redeliver: bool = False):
    """While inside, SIGINT, SIGTERM and SIGHUP raise in the main thread (where they are at
    their default); nested uses share the outer one's handlers. ``redeliver``: on leaving
    with Terminated, the signal is sent again with its default restored (the process dies
    of it, as it would have, after the cleanup)."""
    state = _STATE
    if not _main_thread() or state.installed:
        yield
        return
    for signum, default in _DEFAULTS.items():
        if signal.getsignal(signum) is default:
            state.installed[signum] = signal.signal(signum, _handle)
    state.caught, state.pending, state.waiting, state.stop = None, False, 0, None
    ending: Terminated | None = None
    try:
        yield
    except Terminated as exc:
        ending = exc
        raise
    finally:
        installed, state.installed = state.installed, {}
        for signum, previous in installed.items():
            signal.signal(signum, previous)
        state.caught, state.pending, state.waiting, state.stop = None, False, 0, None
        if redeliver and ending is not None and ending.signum in installed:
            signal.raise_signal(ending.signum)


class _Waiting:
    """A section in which a signal waits (see ``held`` and ``stopping``)."""

    def __init__(self, stop: threading.Event | None = None, later: bool = False):
        self._stop = stop
        self._later = later
        self._active = False

    def __enter__(self):
        state = _STATE
        self._active = bool(state.installed) and _main_thread()
        if self._active:
            state.waiting += 1
            self._previous_stop = state.stop
            if self._stop is not None:
                state.stop = self._stop
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._active:
            return
        state = _STATE
        state.waiting -= 1
        state.stop = self._previous_stop
        if state.pending and not state.waiting and not self._later:
            state.pending = False
            raise exception_for(state.caught)  # replaces what the signal caused (Stopped)


def held(*, later: bool = False) -> _Waiting:
    """A short step that must not be cut (creating or removing a temporary, the renames of
    a commit): a signal that comes is raised when the step is done (``later``: by the
    next ``check``)."""
    return _Waiting(later=later)


def stopping(stop: threading.Event) -> _Waiting:
    """Generating and writing on several threads: a signal sets ``stop`` (the engine stops
    between chunks, its threads joined) and is raised when the section ends."""
    return _Waiting(stop)


def check(*, done: str | None = None) -> None:
    """Raise a signal that came during a section now ended, if any (never twice);
    ``done``: the output that was put in place meanwhile (the message says so)."""
    state = _STATE
    if state.pending and not state.waiting:
        state.pending = False
        if done is not None and state.caught != signal.SIGINT:
            name = signal.Signals(state.caught).name
            raise Terminated(
                state.caught, f"terminated ({name}) as {done} was put in place; it is complete"
            )
        raise exception_for(state.caught)
