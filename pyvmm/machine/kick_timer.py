"""A periodic timer whose signal interrupts one thread's KVM_RUN: the halt watch's tick.

With KVM's LAPIC, `hlt` is served in the kernel, so a guest that halts for
good never exits to pyvmm; each vCPU thread therefore has a POSIX timer
(timer_create(2) on CLOCK_MONOTONIC, SIGEV_THREAD_ID) whose signal goes to
that thread alone and makes its KVM_RUN return EINTR, after which the thread
looks at its own state (machine/vcpu_group.py). The kernel keeps the time, so
no watchdog thread is woken per run, nor started and joined per machine.

The timer is periodic: a tick whose signal lands while the thread runs
Python (not inside KVM_RUN) interrupts nothing, and the next tick comes one
period later. Each check doubles the period, from FIRST_INTERVAL up to
MAX_INTERVAL (how late a guest halted for good is seen).
"""

from __future__ import annotations

import os
import time

from pyvmm._kvm import ffi, lib

FIRST_INTERVAL = 0.001
MAX_INTERVAL = 0.128
_NS = 1_000_000_000


class KickTimer:
    """A timer sending `signum` to the thread that creates it, every `interval` seconds
    once started.

    Create, start, use and close it in that thread. It is made disarmed, so
    that one lost before its owner holds it (an exception in between) never
    sends a signal. `due()` says whether a check is due: true once per period
    that has passed, when it also doubles the period. Raises OSError (errno
    from timer_create or timer_settime) when the host gives no timer:
    RLIMIT_SIGPENDING reached, say.
    """

    def __init__(self, signum: int) -> None:
        handle = ffi.new("void **")
        _check(lib.pyvmm_kick_timer_create(signum, handle), "timer_create")
        self._timer = handle[0]
        self._open = True
        self.interval = 0.0
        self.next_check = float("inf")

    def start(self, interval: float = FIRST_INTERVAL) -> None:
        """Arm it: the first signal after `interval` seconds, then one each `interval`."""
        # The clock is read first: the call's return waits for the GIL, maybe
        # past the first expiry, which must not look like an early interruption.
        now = time.monotonic()
        _check(lib.pyvmm_kick_timer_arm(self._timer, max(1, int(interval * _NS))), "timer_settime")
        self.interval = interval
        self.next_check = now + interval

    def due(self) -> bool:
        """After an interrupted KVM_RUN: has a period passed since the last check?"""
        if time.monotonic() < self.next_check:
            return False  # interrupted by something else: a kick, posted work
        self.start(min(self.interval * 2, MAX_INTERVAL))
        return True

    def close(self) -> None:
        """Delete the timer (idempotent); a tick already sent is still delivered."""
        if self._open:
            self._open = False
            lib.pyvmm_kick_timer_delete(self._timer)


def _check(result: int, call: str) -> None:
    if result < 0:
        raise OSError(-result, f"{call}: {os.strerror(-result)}")
