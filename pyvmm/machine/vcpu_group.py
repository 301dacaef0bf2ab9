"""All the vCPUs of a machine: one thread each, ended together.

vCPU 0 runs in the calling (main) thread, which owns the signal handlers
(--timeout, Ctrl-C, SIGTERM); every other vCPU gets a thread of its own. The
first outcome, from any vCPU, ends the run for all: every loop is asked to stop
(which sets its `kvm_run.immediate_exit`, so a KVM_RUN about to start returns at
once), then every vCPU thread still inside its loop is kicked out of a KVM_RUN
in progress with a signal, once. `run` returns only once every thread is joined.

The kick protocol. `pthread_kill` on the id of a thread that has ended is
undefined behaviour (glibc reads the freed thread descriptor: a SIGSEGV), and
"is it alive? then kill it" is a race. So each vCPU thread enters itself into
`_running` under the group's lock before its loop starts, and takes itself out,
under the same lock, as the last thing it does; the kicker signals only the
threads in `_running`, and holds the lock while it does. A thread in `_running`
has not finished, so its id stays valid for as long as the kicker holds the lock.

Signals: vCPU threads block every asynchronous signal but the kick, so that
SIGALRM, SIGINT, SIGTERM and SIGHUP always reach the main thread, whose
handlers end the run (QEMU's threads leave signals to its main loop the same
way, util/qemu-thread-posix.c: qemu_thread_create).
"""

from __future__ import annotations

import signal
import threading

from pyvmm.machine.outcome import RunOutcome, vmm_error
from pyvmm.machine.vcpu_loop import ExitObserver, VcpuLoop

KICK_SIGNAL = signal.SIGUSR1
# A thread kicked once leaves its loop: immediate_exit was set before the kick.
# Threads still in their loop after this long are kicked again (only those).
REKICK_INTERVAL = 0.05
# Raised by the thread itself (a fault), not sent: blocking them would not help.
_SYNCHRONOUS_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP, signal.SIGSYS}
)


class VcpuGroup:
    """Runs `loops[0]` in the calling thread and each other loop in a thread of its own."""

    def __init__(self, loops: list[VcpuLoop]) -> None:
        self.loops = loops
        # Re-entrant: the --timeout and Ctrl-C handlers call request_stop, and may
        # land in the main thread while it holds the lock already.
        self._lock = threading.RLock()
        self._first: RunOutcome | None = None
        self._threads: list[threading.Thread] = []
        # Threads inside their vCPU loop, by thread id (the only ones a kick may go to).
        self._running: dict[int, int] = {}
        self._unfinished = 0  # secondary threads that have not taken themselves out yet
        self._all_finished = threading.Event()

    def request_stop(self, outcome: RunOutcome) -> None:
        """End the run for every vCPU; the first outcome asked for is the run's.

        Safe from any vCPU thread and from a signal handler in the main thread.
        Only the first request stops the loops and kicks: a later one finds
        every loop stopping already.
        """
        with self._lock:
            if self._first is not None:
                return
            self._first = outcome
            for loop in self.loops:
                loop.request_stop(outcome)
            self._kick_running()

    def _kick_running(self) -> None:
        """Signal each vCPU thread inside its loop but the caller's. Call with the lock held."""
        current = threading.get_ident()
        for ident in tuple(self._running):  # a handler may run inside pthread_kill
            if ident != current:
                signal.pthread_kill(ident, KICK_SIGNAL)

    def _enter(self, vcpu_id: int) -> int:
        ident = threading.get_ident()
        with self._lock:
            self._running[ident] = vcpu_id
        return ident

    def _leave(self, ident: int, secondary: bool) -> None:
        with self._lock:
            del self._running[ident]
            if secondary:
                self._unfinished -= 1
            last = secondary and self._unfinished == 0
        # Outside the lock: Event.set takes the event's own lock, which the main
        # thread may hold inside Event.wait while one of its handlers waits for ours.
        if last:
            self._all_finished.set()

    def _run_secondary(self, loop: VcpuLoop) -> None:
        ident = self._enter(loop.vcpu.vcpu_id)
        try:
            try:
                outcome = loop.run()  # returns at once if the run was stopped already
            except Exception as error:  # a VMM error in a vCPU thread must end the whole run
                outcome = vmm_error(f"vCPU {loop.vcpu.vcpu_id}: {error}")
            self.request_stop(outcome)
        finally:
            self._leave(ident, secondary=True)  # the last thing this thread does

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
        try:
            self._start_threads()
            ident = self._enter(self.loops[0].vcpu.vcpu_id)
            try:
                outcome = self.loops[0].run(observer)
            finally:
                self._leave(ident, secondary=False)
            self.request_stop(outcome)
        except BaseException:
            self.request_stop(vmm_error("stopped by an exception in the main thread"))
            self._join()
            raise
        self._join()
        assert self._first is not None
        return self._first

    def _start_threads(self) -> None:
        self._threads = [
            threading.Thread(
                target=self._run_secondary,
                args=(loop,),
                name=f"vcpu{loop.vcpu.vcpu_id}",
                daemon=True,
            )
            for loop in self.loops[1:]
        ]
        with self._lock:
            self._unfinished = len(self._threads)
            self._all_finished.clear()
        # New threads inherit this mask. A signal that comes meanwhile waits, and
        # its handler runs in this thread as soon as the mask is put back.
        blocked = signal.valid_signals() - _SYNCHRONOUS_SIGNALS - {KICK_SIGNAL}
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            for index, thread in enumerate(self._threads):
                try:
                    thread.start()
                except RuntimeError as error:  # "can't start new thread": out of threads
                    self._give_up_starting(index, error)
                    break
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)

    def _give_up_starting(self, index: int, error: RuntimeError) -> None:
        """Thread `index` could not start: it and the ones after it never will."""
        vcpu_id = self.loops[1 + index].vcpu.vcpu_id
        never = len(self._threads) - index
        del self._threads[index:]
        with self._lock:
            self._unfinished -= never
            none_left = self._unfinished == 0
        if none_left:
            self._all_finished.set()
        self.request_stop(vmm_error(f"cannot start a thread for vCPU {vcpu_id}: {error}"))

    def _join(self) -> None:
        # Every thread was kicked with the stop; wait for all of them at once.
        while not self._all_finished.wait(REKICK_INTERVAL):
            with self._lock:
                self._kick_running()
        for thread in self._threads:
            thread.join()  # each has left its loop: only its return is left
