"""Signals that end a run: the --timeout alarm, Ctrl-C, SIGTERM and SIGHUP.

A signal landing while the vCPU thread is inside KVM_RUN makes the ioctl
return EINTR; one landing while Python runs is caught by setting
`immediate_exit`. A signal landing in the tiny window between the two (after
Python's last look at its pending signals, before the ioctl) waits for the next
one: so the alarm repeats every KICK_INTERVAL from the deadline on, and a stop
signal's handler arms the same repeating alarm, until the run has ended.

Outside a run (while the machine is built, while the gdb stub waits, and in
the CLI around the whole command) `stop_signals_raise` turns a SIGTERM or
SIGHUP that would kill the process on the spot into StoppedBySignal, so that
what was already set up (the terminal, file descriptors) is undone first and
the stop is reported as every other stop is (`pyvmm: stopped by SIGTERM`,
then the process ends by the signal).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from pyvmm.machine.outcome import EXIT_SIGNAL_BASE, RunOutcome, interrupted, timed_out

KICK_INTERVAL = 0.01
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def stop_on_signals(
    request_stop: Callable[[RunOutcome], None], timeout: float | None
) -> Iterator[None]:
    """Install the handlers for the duration of a run, then restore the old ones."""
    if threading.current_thread() is not threading.main_thread():
        # Only the main thread may own signal handlers; the caller stops us otherwise.
        yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        request_stop(timed_out(timeout or 0))

    def on_stop_signal(signum: int, frame: FrameType | None) -> None:
        request_stop(interrupted(signal.Signals(signum).name, signum))
        signal.setitimer(signal.ITIMER_REAL, KICK_INTERVAL, KICK_INTERVAL)

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGALRM, *_STOP_SIGNALS)}
    signal.signal(signal.SIGALRM, on_alarm)
    for signum in _STOP_SIGNALS:
        signal.signal(signum, on_stop_signal)
    if timeout is not None:
        signal.setitimer(signal.ITIMER_REAL, timeout, KICK_INTERVAL)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class StoppedBySignal(BaseException):
    """A SIGTERM or SIGHUP came outside a run (while the machine was built, say).

    `signal` is its number; `exit_status` is 128 + it, what a shell shows for a
    process that signal ended. Like KeyboardInterrupt, what Ctrl-C raises, it
    is no Exception: raised wherever the signal lands, it must get through
    every `except Exception` on its way out (logging's handlers have one).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signal = signum
        self.exit_status = EXIT_SIGNAL_BASE + signum


# Ctrl-C needs nothing: Python's own SIGINT handler raises KeyboardInterrupt.
_BUILD_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, a SIGTERM or SIGHUP raises StoppedBySignal, instead of killing
    the process before anything is cleaned up.

    Only signals whose disposition is the default (terminate) are taken over: a
    program embedding pyvmm keeps its own handlers. Outside the main thread this
    does nothing (only the main thread may own signal handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_stop_signal(signum: int, frame: FrameType | None) -> None:
        raise StoppedBySignal(signum)

    previous = {
        signum: handler
        for signum in _BUILD_STOP_SIGNALS
        if (handler := signal.getsignal(signum)) is signal.SIG_DFL
    }
    for signum in previous:
        signal.signal(signum, on_stop_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
