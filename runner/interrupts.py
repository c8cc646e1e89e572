"""How a process of the runner stops on SIGINT (Ctrl-C), SIGTERM and a job's time limit.

Python raises KeyboardInterrupt wherever the main thread happens to be. Landing inside a write to the
store, it can leave a SQLite transaction open: the write that should end the run KILLED then waits for
that lock and fails ("database is locked"), and the run stays RUNNING. So the handlers here decide when
an interrupt is raised:

- inside a write to the run (`ExperimentTracker._write`) and while a run is being created or ended
  ("closing"), a signal is recorded and raised right after the write, or not at all when the run is
  already ending: the run's last words are never cut;
- in a sweep's worker process (joblib/loky, submitit) a signal raises only while a job runs; between jobs
  it marks the worker as stopping, and the worker then refuses new jobs (raising in loky's idle loop would
  kill the worker, and loky answers a dead worker by killing every other worker with SIGKILL);
- in the main process of a sweep whose jobs run elsewhere, the first signal first stops the workers
  (`before_raise`, set by runner.sweep): they end their runs KILLED, then the interrupt is raised;
- once an interrupt has been raised, later signals are ignored: the first one is on its way out (unless
  the job's body still runs: Python swallowed it, e.g. raised inside a weakref callback).

Inside TensorFlow (`native()`: building, fitting, predicting) nothing is raised from a handler either:
TensorFlow runs Python callbacks under its C++ frames, and an exception raised there by a signal
corrupted the process's heap ("munmap_chunk(): invalid pointer", SIGABRT, seen in CI). A signal there
waits for the next batch boundary, where Keras calls `checkpoint()` from plain Python, or for the end
of the section.

SIGTERM raises `Terminated`, a KeyboardInterrupt, so every handler of Ctrl-C also handles it. The time
limit is SIGALRM in the job's own thread and raises `TimeLimitExceeded`, an ordinary exception: the job
fails, its sweep goes on. State is per process; only the main thread changes it (signals run there).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from runner.contract import MAIN_PID_ENV


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run ends KILLED."""


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C). A subclass on purpose: CPython remembers a bare KeyboardInterrupt that leaves code
    run from a string (exec/eval) and then ends the process by SIGINT, whatever exit code it chose."""


class TimeLimitExceeded(Exception):  # noqa: N818 (it reads as what happened)
    """The job ran past its time limit (trainer.time_limit_seconds): its run ends FAILED."""


class _State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.installed = False
        self.worker = False  # a sweep's worker process (not the command's own process)
        self.job = False  # a job is running in this process
        self.closing = False  # a run is being created or ended: signals wait
        self.depth = 0  # inside a write to the store: signals wait
        self.atomic = 0  # inside an import: the time limit waits
        self.native = 0  # inside TensorFlow: signals and the time limit wait for a batch boundary
        self.stopping: int | None = None  # the first signal received (sticky: a worker takes no new job)
        self.raised = False  # an interrupt has been raised in this process
        self.pending = False  # a signal arrived while it had to wait
        self.alarm = None  # a TimeLimitExceeded that had to wait
        self.count = 0  # signals received
        self.landed: list[str] = []  # where each signal arrived (for tests and diagnosis)
        self.swallowed = 0  # interrupts Python ignored (weakref callbacks, __del__), kept to raise again
        self.before_raise: Callable[[int], None] | None = None
        self.time_limit: float | None = None


STATE = _State()


def interrupt_for(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else Interrupted()


def _where() -> str:
    if STATE.depth:
        return "write"
    if STATE.closing:
        return "closing"
    if STATE.native:
        return "tensorflow"
    return "job" if STATE.job else "idle"


def _handler(signum, frame) -> None:
    STATE.count += 1
    STATE.landed.append(_where())
    if STATE.stopping is None:
        STATE.stopping = signum
    if STATE.raised and not (STATE.job and not STATE.closing and not STATE.depth):
        return  # the first interrupt is on its way out; its cleanup must not be cut
    # (still inside a job's body after an interrupt: it was swallowed, e.g. raised in a weakref callback
    # and "ignored" by Python; this one is raised again)
    if STATE.depth or STATE.closing or STATE.native or (STATE.worker and not STATE.job):
        STATE.pending = True
        return
    _fire()


def _fire() -> None:
    STATE.raised, STATE.pending = True, False
    if STATE.before_raise is not None and not STATE.worker:
        STATE.before_raise(STATE.stopping)
    raise interrupt_for(STATE.stopping)


_previous: dict[int, Any] = {}
_previous_unraisable: list[Callable] = []


def _unraisable(unraisable) -> None:
    """Python ignores an exception raised in a weakref callback or a __del__ (the garbage collector runs
    them at any moment): an interrupt raised there would be lost, and the user would have to press Ctrl-C
    again. It is kept instead, and raised again where raising is allowed (the next store write's end, the
    next Keras batch boundary, between jobs)."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and STATE.installed and STATE.raised:
        STATE.raised, STATE.pending = False, True
        STATE.swallowed += 1
        return
    (_previous_unraisable[0] if _previous_unraisable else sys.__unraisablehook__)(unraisable)


def install() -> bool:
    """Take over SIGINT and SIGTERM in this process (main thread only). Returns True when installed now,
    False when they already were (or this is not the main thread)."""
    if STATE.installed or threading.current_thread() is not threading.main_thread():
        return False
    main_pid = os.environ.get(MAIN_PID_ENV)
    STATE.worker = main_pid is not None and main_pid != str(os.getpid())
    for signum in (signal.SIGINT, signal.SIGTERM):
        _previous[signum] = signal.signal(signum, _handler)
    _previous_unraisable[:] = [sys.unraisablehook]
    sys.unraisablehook = _unraisable
    STATE.installed = True
    return True


def uninstall() -> None:
    """Give SIGINT and SIGTERM back to their previous handlers (a job run in-process by a library user:
    their Ctrl-C must behave as before once the job is over)."""
    if not STATE.installed or threading.current_thread() is not threading.main_thread():
        return
    for signum, handler in _previous.items():
        signal.signal(signum, handler)
    _previous.clear()
    if sys.unraisablehook is _unraisable and _previous_unraisable:
        sys.unraisablehook = _previous_unraisable[0]
    _previous_unraisable.clear()
    STATE.reset()


def mark_main_process() -> None:
    """The command's own process: its workers inherit the variable and know they are workers."""
    os.environ[MAIN_PID_ENV] = str(os.getpid())


def raise_pending() -> None:
    """Raise what had to wait (an interrupt first, then the time limit), when raising is allowed here."""
    if STATE.depth or STATE.closing or STATE.native:
        return
    if STATE.pending and not STATE.raised and (STATE.job or not STATE.worker):
        _fire()
    if STATE.alarm is not None and STATE.job and not STATE.atomic:
        alarm, STATE.alarm = STATE.alarm, None
        raise alarm


def swallowed(error: BaseException | None) -> KeyboardInterrupt | None:
    """The interrupt behind `error` when a library caught the one raised here and raised its own error
    instead (OmegaConf composing the next job's config turns it into "root.handlers: ...", TensorFlow's
    pybind11 code into RuntimeError): this process raised an interrupt and `error` is not one. None when
    `error` is an interrupt itself, or nothing was raised."""
    if error is None or isinstance(error, KeyboardInterrupt):
        return None
    if STATE.raised and STATE.stopping is not None:
        return interrupt_for(STATE.stopping)
    return None


def refuse_if_stopping() -> None:
    """A worker told to stop takes no new job: raise before a run exists."""
    if STATE.stopping is not None and STATE.installed:
        STATE.raised = True
        raise interrupt_for(STATE.stopping)


@contextmanager
def write() -> Iterator[None]:
    """A write to the store: a signal that arrives inside waits for its end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STATE.depth += 1
    try:
        yield
    finally:
        STATE.depth -= 1
    raise_pending()


@contextmanager
def last_words() -> Iterator[None]:
    """The command's last step (a sweep's decision and its registry changes): a signal meanwhile is
    ignored, so the step is never cut halfway; the command ends right after it anyway."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STATE.depth += 1
    try:
        yield
    finally:
        STATE.depth -= 1
        if not STATE.depth:
            STATE.pending = False


@contextmanager
def native() -> Iterator[None]:
    """A section inside TensorFlow: a signal or the time limit waits for `checkpoint()` or the section's end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STATE.native += 1
    try:
        yield
    finally:
        STATE.native -= 1
    if not STATE.native:
        raise_pending()


def checkpoint() -> None:
    """A safe point inside a `native()` section (Keras calls it after each batch): raise what waited."""
    if not STATE.native or (not STATE.pending and STATE.alarm is None):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    saved, STATE.native = STATE.native, 0
    try:
        raise_pending()
    finally:
        STATE.native = saved


# -- the time limit ---------------------------------------------------------------------------------
def _alarm(signum, frame) -> None:
    error = TimeLimitExceeded(f"time limit: the job ran past trainer.time_limit_seconds={STATE.time_limit:g}")
    if STATE.depth or STATE.atomic or STATE.closing or STATE.native or not STATE.job:
        STATE.alarm = error
        return
    raise error


@contextmanager
def no_time_limit() -> Iterator[None]:
    """A section the time limit waits for (an import: cut halfway, it breaks the process's later jobs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STATE.atomic += 1
    try:
        yield
    finally:
        STATE.atomic -= 1
    if not STATE.atomic:
        raise_pending()


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """SIGALRM after `seconds` raises TimeLimitExceeded in this (the main) thread between two Python
    steps: a long epoch, a hung request or sleep is stopped; C code that never returns is not."""
    if not seconds:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("trainer.time_limit_seconds needs the job to run in its process's main thread")
    STATE.time_limit = seconds
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        STATE.alarm = None


# -- a sweep's workers, seen from its main process ----------------------------------------------------
def descendants(pid: int | None = None) -> list[int]:
    """Live processes below `pid` (this process by default), read from /proc; zombies are left out."""
    root = pid or os.getpid()
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        info = _stat(int(entry))
        if info and info[0] != "Z":
            parents.setdefault(info[1], []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    info = _stat(pid)
    return info is not None and info[0] != "Z"


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def is_helper(pid: int) -> bool:
    """Loky's and multiprocessing's resource trackers: they ignore SIGINT/SIGTERM by design and leave
    on their own when the main process ends."""
    return "resource_tracker" in command_line(pid)


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def reap(pids: list[int], grace_seconds: float) -> list[int]:
    """SIGTERM, then SIGKILL what is still alive after `grace_seconds`; returns the pids killed hard."""
    signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    stubborn = [p for p in pids if alive(p)]
    signal_all(stubborn, signal.SIGKILL)
    return stubborn
