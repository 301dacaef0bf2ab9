"""The halt watch's kick timer: its signal goes to the thread that made it, at growing periods."""

from __future__ import annotations

import errno
import signal
import threading
import time
from pathlib import Path

import pytest

from pyvmm.machine.kick_timer import FIRST_INTERVAL, MAX_INTERVAL, KickTimer

TIMERS = Path("/proc/self/timers")  # the process's POSIX timers (CONFIG_CHECKPOINT_RESTORE)


def _timer_count() -> int | None:
    if not TIMERS.exists():
        return None
    return sum(line.startswith("ID:") for line in TIMERS.read_text().splitlines())


def test_the_signal_goes_to_the_thread_that_made_the_timer_and_to_no_other() -> None:
    received_by_main: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: received_by_main.append(signum))
    waited: list[object] = []

    def worker() -> None:
        # Blocked here, the signal waits in this thread's queue for sigtimedwait;
        # sent to the process instead, it would go to the main thread's handler.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
        timer = KickTimer(signal.SIGUSR2)
        timer.start(0.002)
        try:
            waited.append(signal.sigtimedwait({signal.SIGUSR2}, 5))
        finally:
            timer.close()

    try:
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        time.sleep(0.01)  # a tick sent to the process would have reached the handler by now
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert len(waited) == 1 and waited[0] is not None
    assert waited[0].si_signo == signal.SIGUSR2  # type: ignore[attr-defined]
    assert received_by_main == []


def test_a_check_is_due_once_per_period_and_each_period_is_twice_the_last() -> None:
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: None)
    try:
        timer = KickTimer(signal.SIGUSR2)
        try:
            assert not timer.due()  # not started: never due
            timer.start()
            assert timer.interval == FIRST_INTERVAL
            assert not timer.due()  # interrupted before the first period ended: not the tick
            periods = []
            for _ in range(9):
                time.sleep(timer.next_check - time.monotonic() + 0.0005)
                assert timer.due()
                periods.append(timer.interval)
                assert not timer.due()
        finally:
            timer.close()
            timer.close()  # idempotent
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert periods == [0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.128, 0.128]
    assert MAX_INTERVAL == 0.128


def test_a_timer_not_started_sends_nothing() -> None:
    # Made disarmed: one lost before its owner holds it must never signal.
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))
    try:
        timer = KickTimer(signal.SIGUSR2)
        time.sleep(0.02)
        timer.close()
        unstarted = list(received)
        started = KickTimer(signal.SIGUSR2)
        started.start(0.001)
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.001)
        started.close()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert unstarted == []
    assert received  # the started one did signal within the same kind of wait


def test_the_timer_is_the_calling_threads_and_closing_deletes_it() -> None:
    before = _timer_count()
    if before is None:
        pytest.skip("no /proc/self/timers on this kernel")
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: None)
    try:
        timer = KickTimer(signal.SIGUSR2)
        timer.start(10)
        assert _timer_count() == before + 1
        assert f"notify: signal/tid.{threading.get_native_id()}" in TIMERS.read_text()
        timer.close()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert _timer_count() == before


def test_a_signal_the_host_does_not_know_is_an_os_error_not_a_timer() -> None:
    before = _timer_count()
    with pytest.raises(OSError) as raised:
        KickTimer(1000)
    assert raised.value.errno == errno.EINVAL
    assert "timer_create" in str(raised.value)
    assert _timer_count() == before
