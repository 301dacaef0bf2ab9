"""Helper threads that leave the process's signals to the threads that handle them.

pyvmm's asynchronous signals (--timeout's SIGALRM, Ctrl-C, SIGTERM, SIGHUP, the
vCPU kick) must land in a thread whose KVM_RUN they interrupt, never in a
timer's, the monitor's or the SYSCALL repair's. A new thread inherits its
creator's signal mask (pthread_sigmask(3)), so such a thread is started with
them blocked, and the creator's mask is put back at once; a signal that comes
meanwhile waits, and its handler runs in the creator as soon as the mask is
back. The synchronous signals a fault raises in the thread itself stay open.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

# Signals a thread raises itself by faulting: never blocked.
SYNCHRONOUS_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP, signal.SIGSYS}
)
_asynchronous: frozenset[int] = frozenset()


def asynchronous_signals() -> frozenset[int]:
    """Every valid signal but SYNCHRONOUS_SIGNALS (worked out once: each
    `signal.valid_signals()` makes some 60 enum members)."""
    global _asynchronous
    if not _asynchronous:
        _asynchronous = frozenset(signal.valid_signals() - SYNCHRONOUS_SIGNALS)
    return _asynchronous


@contextmanager
def signals_blocked(keep: frozenset[int] = frozenset()) -> Iterator[None]:
    """Threads started inside run with every asynchronous signal but `keep` blocked."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, asynchronous_signals() - keep)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
