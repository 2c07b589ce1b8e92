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
import gc
import signal
import sys
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
    """The one set of handlers (the main thread's): what they do now, and what came.

    A signal's exception is owed until it is seen on its way out. Where Python would print
    and drop it (the handler runs inside a garbage-collector callback, which JAX registers,
    or a ``__del__``), it is not raised there but at the next check (``check``, or leaving a
    ``held`` or ``stopping`` section), unless it is the exception being handled there."""

    def __init__(self) -> None:
        self.installed: dict[int, object] = {}  # signal: the disposition it had before
        self.reset()

    def reset(self) -> None:
        self.caught: int | None = None  # the first signal of this run
        self.owed = False  # its exception has not been seen on its way out yet
        self.raised: BaseException | None = None  # the last exception raised for it
        self.waiting = 0  # depth of held/stopping sections: raise later, not now
        self.stop: threading.Event | None = None  # set when a signal comes while stopping
        self.done: str | None = None  # the output already in place, if any


_STATE = _State()


def exception_for(signum: int) -> BaseException:
    """What a signal becomes: KeyboardInterrupt for SIGINT (as Python's own handler does),
    Terminated for the others (saying so when the output is already in place)."""
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    done = _STATE.done
    if done is None:
        return Terminated(signum)
    name = signal.Signals(signum).name
    return Terminated(signum, f"terminated ({name}) after {done} was written; it is complete")


def _raise() -> None:
    state = _STATE
    state.raised = exception_for(state.caught)
    raise state.raised


def _handle(signum: int, frame) -> None:
    state = _STATE
    if state.caught is not None:  # the run is already ending: a second signal changes nothing
        return
    state.caught, state.owed = signum, True
    if state.waiting or _dropping(frame):
        if state.stop is not None:
            state.stop.set()
        return
    _raise()


def _dropping(frame) -> bool:
    """Whether an exception raised in ``frame`` would be printed and dropped: inside a
    garbage-collector callback (JAX registers one) or a ``__del__``."""
    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code in callbacks or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _seen(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it was raised from or during) is the signal's exception."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if exc is _STATE.raised:
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _owed(exc: BaseException | None = None) -> bool:
    """A signal came whose exception is not on its way out (raise it now)."""
    state = _STATE
    if not state.owed or state.waiting:
        return False
    if _seen(exc) or _seen(sys.exc_info()[1]):
        state.owed = False
        return False
    return True


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
    state.reset()
    ending: Terminated | None = None
    try:
        yield
        check()  # a signal whose exception was dropped on the way
    except Terminated as exc:
        ending = exc
        raise
    finally:
        installed, state.installed = state.installed, {}
        for signum, previous in installed.items():
            signal.signal(signum, previous)
        state.reset()
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
        if not self._later and _owed(exc):
            _raise()  # replaces what the signal caused (the engine's Stopped)


def held(*, later: bool = False) -> _Waiting:
    """A short step that must not be cut (creating or removing a temporary, the renames of
    a commit): a signal that comes is raised when the step is done (``later``: by the
    next ``check``)."""
    return _Waiting(later=later)


def stopping(stop: threading.Event) -> _Waiting:
    """Generating and writing on several threads: a signal sets ``stop`` (the engine stops
    between chunks, its threads joined) and is raised when the section ends."""
    return _Waiting(stop)


def check() -> None:
    """Raise a signal whose exception is owed: it came during a section now ended, or was
    dropped where it was raised. Never raises the one already on its way out."""
    if _owed():
        _raise()


def written(path: str) -> None:
    """The output is in place: a signal from now on says so."""
    _STATE.done = path
