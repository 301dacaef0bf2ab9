"""Signals that end a run: the --timeout alarm, Ctrl-C, SIGTERM and SIGHUP.

A signal landing while the vCPU thread is inside KVM_RUN makes the ioctl
return EINTR; one landing while Python runs is caught by setting
`immediate_exit`. In the tiny window between the two, the handler also arms
a short repeating timer, so the next tick kicks the vCPU out for sure.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from pyvmm.machine.outcome import RunOutcome, interrupted, timed_out

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
        signal.setitimer(signal.ITIMER_REAL, KICK_INTERVAL, KICK_INTERVAL)

    def on_stop_signal(signum: int, frame: FrameType | None) -> None:
        request_stop(interrupted(signal.Signals(signum).name, signum))
        signal.setitimer(signal.ITIMER_REAL, KICK_INTERVAL, KICK_INTERVAL)

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGALRM, *_STOP_SIGNALS)}
    signal.signal(signal.SIGALRM, on_alarm)
    for signum in _STOP_SIGNALS:
        signal.signal(signum, on_stop_signal)
    if timeout is not None:
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
