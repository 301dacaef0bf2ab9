"""The host process as a fuzzed guest may leave it: what must be the same after every run.

File descriptors, threads, signal handlers, the interval timer and terminal
modes; and the address space size, whose growth a campaign reports.
"""

from __future__ import annotations

import os
import signal
import termios
import threading
import time
from dataclasses import dataclass

WATCHED_SIGNALS = (signal.SIGALRM, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)


@dataclass(frozen=True)
class HostState:
    fds: frozenset[int]
    threads: int
    tasks: int  # kernel threads of the process, native ones included
    handlers: tuple[object, ...]
    timer: tuple[float, float]
    terminal: tuple[object, ...]

    @classmethod
    def now(cls) -> HostState:
        return cls(
            frozenset(int(name) for name in os.listdir("/proc/self/fd")),
            threading.active_count(),
            len(os.listdir("/proc/self/task")),
            tuple(signal.getsignal(signum) for signum in WATCHED_SIGNALS),
            signal.getitimer(signal.ITIMER_REAL),
            tuple(_terminal_mode(fd) for fd in (0, 1, 2)),
        )

    def differences(self, later: HostState) -> list[str]:
        found = []
        if later.fds - self.fds:
            found.append(f"leaked fds {sorted(later.fds - self.fds)}")
        if self.fds - later.fds:
            found.append(f"closed fds it did not own {sorted(self.fds - later.fds)}")
        if later.threads != self.threads or later.tasks != self.tasks:
            found.append(f"threads {self.threads}/{self.tasks} -> {later.threads}/{later.tasks}")
        handlers = zip(WATCHED_SIGNALS, self.handlers, later.handlers, strict=True)
        for signum, before, after in handlers:
            if before != after:
                found.append(f"{signal.Signals(signum).name} handler left changed")
        if later.timer != (0.0, 0.0) and later.timer != self.timer:
            found.append(f"interval timer left running: {later.timer}")
        if later.terminal != self.terminal:
            found.append("terminal mode changed")
        return found


def settled_state(settle: float = 0.5) -> HostState:
    """The state once threads that are just exiting (a vCPU's, a device timer's) are gone
    from /proc: a baseline taken while one lingers would flag its exit as a change."""
    deadline = time.monotonic() + settle
    while True:
        state = HostState.now()
        if state.tasks <= state.threads or time.monotonic() >= deadline:
            return state
        time.sleep(0.005)


def host_differences(baseline: HostState, settle: float = 0.2) -> list[str]:
    """What the last run left changed. A thread that is just exiting (a vCPU's, a device
    timer's) may linger in /proc for a moment after its join: give it that moment."""
    deadline = time.monotonic() + settle
    while True:
        found = baseline.differences(HostState.now())
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.005)


def _terminal_mode(fd: int) -> object:
    try:
        return repr(termios.tcgetattr(fd)) if os.isatty(fd) else None
    except (OSError, termios.error):
        return None


def address_space_size() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
