"""All the vCPUs of a machine: one thread each, ended together.

vCPU 0 runs in the main thread (it owns the signal handlers: --timeout,
Ctrl-C); every other vCPU gets a thread. The first outcome, from any vCPU,
ends the run for all: each loop is asked to stop and each thread is kicked
out of KVM_RUN with a signal. `run` returns only once every thread is joined.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from pyvmm.machine.outcome import RunOutcome, vmm_error
from pyvmm.machine.vcpu_loop import ExitObserver, VcpuLoop

KICK_SIGNAL = signal.SIGUSR1
JOIN_POLL = 0.05


class VcpuGroup:
    def __init__(self, loops: list[VcpuLoop]) -> None:
        self.loops = loops
        # Re-entrant: the --timeout and Ctrl-C handlers call request_stop, and may
        # land in the main thread while it is inside request_stop already.
        self._lock = threading.RLock()
        self._first: RunOutcome | None = None
        self._threads: list[threading.Thread] = []

    def request_stop(self, outcome: RunOutcome) -> None:
        """End the run for every vCPU; the first outcome asked for is the run's."""
        with self._lock:
            if self._first is None:
                self._first = outcome
            first = self._first
        for loop in self.loops:
            loop.request_stop(first)
        self._kick_threads()

    def _kick_threads(self) -> None:
        current = threading.get_ident()
        for thread in self._threads:
            if thread.ident is not None and thread.ident != current and thread.is_alive():
                with contextlib.suppress(ProcessLookupError):  # it just ended
                    signal.pthread_kill(thread.ident, KICK_SIGNAL)

    def _run_secondary(self, loop: VcpuLoop) -> None:
        try:
            outcome = loop.run()
        except Exception as error:  # a VMM error in a vCPU thread must end the whole run
            outcome = vmm_error(f"vCPU {loop.vcpu.vcpu_id}: {error}")
        self.request_stop(outcome)
        signal.pthread_kill(threading.main_thread().ident or 0, KICK_SIGNAL)

    def run(self, observer: ExitObserver | None = None) -> RunOutcome:
        """Run every vCPU until one of them ends the run. Call from the main thread."""
        if len(self.loops) == 1:
            return self.loops[0].run(observer)
        # The handler does nothing: the signal only interrupts KVM_RUN. The
        # embedding program's own handler comes back when the run ends.
        previous = signal.signal(KICK_SIGNAL, lambda signum, frame: None)
        try:
            return self._run_threads(observer)
        finally:
            if previous is not None:  # None: installed from C, cannot be put back
                signal.signal(KICK_SIGNAL, previous)

    def _run_threads(self, observer: ExitObserver | None) -> RunOutcome:
        self._threads = [
            threading.Thread(
                target=self._run_secondary,
                args=(loop,),
                name=f"vcpu{loop.vcpu.vcpu_id}",
                daemon=True,
            )
            for loop in self.loops[1:]
        ]
        for thread in self._threads:
            thread.start()
        try:
            outcome = self.loops[0].run(observer)
        except BaseException:
            self.request_stop(vmm_error("stopped by an exception in the main thread"))
            self._join()
            raise
        self.request_stop(outcome)
        self._join()
        assert self._first is not None
        return self._first

    def _join(self) -> None:
        # A thread can be about to enter KVM_RUN when kicked: kick until it is gone.
        for thread in self._threads:
            while thread.is_alive():
                self._kick_threads()
                thread.join(JOIN_POLL)
