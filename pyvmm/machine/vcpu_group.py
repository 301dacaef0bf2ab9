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

The halt watch (machines with KVM's LAPIC). KVM then serves `hlt` itself, so
a guest that halts for good never exits to pyvmm. Each vCPU thread has a
kick timer of its own for the length of a run (kick_timer.py: a POSIX timer
whose signal goes to that thread alone, at growing intervals: 1, 2, 4 ... ms,
then every 128 ms), and on each tick the vCPU, in its own thread, reads its
own state (vcpu_states.py): stuck means halted with IF=0 or waiting for
INIT/SIPI. When the last vCPU finds every vCPU stuck, it confirms with the
whole machine still: it holds every other vCPU out of KVM_RUN (a vCPU found
stuck earlier may have been woken since, by another's IPI), reads all states
again, and ends the run as halted if none can run. One vCPU needs no
confirmation: nothing else runs.

Device work from other threads (`post`: host input for COM1) runs in vCPU 0's
thread between two KVM_RUNs, under the device lock when there are several
vCPUs: devices are only ever touched from vCPU threads, but for the virtio
transports an I/O thread serves through ioeventfds (machine/io_thread.py),
which guard themselves with their own lock.

Signals: vCPU threads block every asynchronous signal but the kick, so that
SIGALRM, SIGINT, SIGTERM and SIGHUP always reach the main thread, whose
handlers end the run (QEMU's threads leave signals to its main loop the same
way, util/qemu-thread-posix.c: qemu_thread_create).
"""

from __future__ import annotations

import collections
import signal
import threading
import time
from collections.abc import Callable

from pyvmm.machine.kick_timer import KickTimer
from pyvmm.machine.outcome import EXIT_HALTED, OutcomeKind, RunOutcome, vmm_error
from pyvmm.machine.vcpu_loop import VcpuLoop
from pyvmm.machine.vcpu_states import describe_halted, read_vcpu_state
from pyvmm.quiet_threads import signals_blocked

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from pyvmm.machine.vcpu_loop import ExitObserver

KICK_SIGNAL = signal.SIGUSR1
# A thread kicked once leaves its loop: immediate_exit was set before the kick.
# Threads still in their loop after this long are kicked again (only those).
REKICK_INTERVAL = 0.05
# How long the confirming vCPU waits for the others to come out of KVM_RUN; one
# that does not (busy with an exit: output to a slow console) is not stuck.
CONFIRM_TIMEOUT = 0.05
HOLD_POLL = 0.005


class VcpuGroup:
    """Runs `loops[0]` in the calling thread and each other loop in a thread of its own.

    `watch_halts`: the machine has KVM's LAPIC, so `hlt` never exits to
    pyvmm and the halt watch (above) ends a run that can never go on. Raises
    nothing for a host that gives no timer: that run ends as a VMM error.
    """

    def __init__(self, loops: list[VcpuLoop], watch_halts: bool = False) -> None:
        self.loops = loops
        self.watch_halts = watch_halts
        # Re-entrant: the --timeout and Ctrl-C handlers call request_stop, and may
        # land in the main thread while it holds the lock already.
        self._lock = threading.RLock()
        self._first: RunOutcome | None = None
        self._threads: list[threading.Thread] = []
        # Threads inside their vCPU loop, by thread id (the only ones a kick may go to).
        self._running: dict[int, int] = {}
        self._unfinished = 0  # secondary threads that have not taken themselves out yet
        self._all_finished = threading.Event()
        # The halt watch: each vCPU's kick timer (during a run), which were found stuck.
        self._watches: list[KickTimer | None] = [None] * len(loops)
        self._stuck: set[int] = set()
        self._position = {id(loop): index for index, loop in enumerate(loops)}
        # The confirmation: while `_confirming`, interrupted vCPUs wait in `_hold`.
        self._confirm = threading.Condition(threading.RLock())
        self._confirming = False
        self._held = 0
        # Work posted by other threads, per vCPU (deques: thread-safe appends).
        self._posted: list[collections.deque[Callable[[], None]]] = [
            collections.deque() for _ in loops
        ]
        # Called once when the run is asked to stop (devices cut long work short).
        self.on_stop: list[Callable[[], None]] = []
        for loop in loops:
            loop.on_interrupted = self._on_interrupted

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
            for callback in self.on_stop:
                callback()

    def _kick_running(self) -> None:
        """Signal each vCPU thread inside its loop but the caller's. Call with the lock held."""
        current = threading.get_ident()
        for ident in tuple(self._running):  # a handler may run inside pthread_kill
            if ident != current:
                signal.pthread_kill(ident, KICK_SIGNAL)

    def post(self, work: Callable[[], None], vcpu: int = 0) -> None:
        """Run `work` in vCPU `vcpu`'s thread before its next KVM_RUN; from any thread.

        For device work that comes from outside the vCPUs (host input for
        COM1), which goes to vCPU 0, and for work on one vCPU's own state
        (the SYSCALL repair's look at its IDT): the vCPU is kicked out of
        KVM_RUN (even out of a `hlt`), runs it (under the device lock when
        there are several vCPUs) and goes on.
        """
        self._posted[vcpu].append(work)
        loop = self.loops[vcpu]
        run = loop.vcpu.run_struct
        if run is not None:
            # Seen by a KVM_RUN about to start: the kick alone could land just before it.
            run.immediate_exit = 1
        with self._lock:
            for ident, vcpu_id in tuple(self._running.items()):
                if vcpu_id == loop.vcpu.vcpu_id and ident != threading.get_ident():
                    signal.pthread_kill(ident, KICK_SIGNAL)

    def _on_interrupted(self, loop: VcpuLoop) -> None:
        """After an interrupted KVM_RUN, in `loop`'s own thread: posted work, the halt watch."""
        position = self._position[id(loop)]
        posted = self._posted[position]
        if posted:
            self._run_posted(loop, posted)
        if self._confirming:
            self._hold(loop)
            return
        watch = self._watches[position]
        if watch is None or not watch.due():
            return
        stuck = read_vcpu_state(loop.vcpu).stuck
        with self._lock:
            if stuck:
                self._stuck.add(position)
            else:
                self._stuck.discard(position)
            everyone = len(self._stuck) == len(self.loops)
        if everyone:
            self._confirm_halted(loop)

    def _run_posted(self, loop: VcpuLoop, posted: collections.deque[Callable[[], None]]) -> None:
        lock = loop.device_lock
        while posted:
            work = posted.popleft()
            if lock is None:
                work()
            else:
                with lock:
                    work()

    def _confirm_halted(self, decider: VcpuLoop) -> None:
        """Every vCPU was found stuck: check again with all of them out of KVM_RUN."""
        others = [loop for loop in self.loops if loop is not decider]
        with self._confirm:
            if self._confirming:  # another vCPU is confirming already: be held by it
                self._hold(decider)
                return
            self._confirming, self._held = True, 0
        with self._lock:
            for loop in others:
                run = loop.vcpu.run_struct
                if run is not None:
                    run.immediate_exit = 1
            self._kick_running()
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        with self._confirm:
            while self._held < len(others) and not decider.stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._confirm.wait(left)
            still = self._held == len(others) and not decider.stopping
        states = [read_vcpu_state(loop.vcpu) for loop in self.loops] if still else []
        halted = bool(states) and all(state.stuck for state in states)
        with self._confirm:
            self._confirming = False
            if not halted:
                with self._lock:
                    self._stuck.clear()
            self._confirm.notify_all()
        if halted:
            self.request_stop(RunOutcome(OutcomeKind.HALTED, EXIT_HALTED, describe_halted(states)))

    def _hold(self, loop: VcpuLoop) -> None:
        """Stay out of KVM_RUN while another vCPU confirms that the guest halted for good."""
        with self._confirm:
            if not self._confirming:
                return
            self._held += 1
            self._confirm.notify_all()
            try:
                # Polled: a stop of the whole run does not notify this condition.
                while self._confirming and not loop.stopping:
                    self._confirm.wait(HOLD_POLL)
            finally:
                self._held -= 1

    def _run_watched(self, position: int, observer: ExitObserver | None = None) -> RunOutcome:
        """In vCPU `position`'s own thread: its loop, with its kick timer for the
        length of the run when the halt watch is on (a VMM error when the host
        gives no timer)."""
        loop = self.loops[position]
        if not self.watch_halts:
            return loop.run(observer)
        try:
            try:
                watch = self._watches[position] = KickTimer(KICK_SIGNAL)  # disarmed until held
                watch.start()
            except OSError as error:
                return vmm_error(f"vCPU {loop.vcpu.vcpu_id}: no timer for the halt watch: {error}")
            return loop.run(observer)
        finally:
            watch, self._watches[position] = self._watches[position], None
            if watch is not None:
                watch.close()

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
                # returns at once if the run was stopped already
                outcome = self._run_watched(self._position[id(loop)])
            except Exception as error:  # a VMM error in a vCPU thread must end the whole run
                outcome = vmm_error(f"vCPU {loop.vcpu.vcpu_id}: {error}")
            self.request_stop(outcome)
        finally:
            self._leave(ident, secondary=True)  # the last thing this thread does

    def run(self, observer: ExitObserver | None = None) -> RunOutcome:
        """Run every vCPU until one of them ends the run (or the halt watch does).

        Call from the main thread: the kick's handler can only be installed
        there. From another thread the kick signal must already have a handler
        (not SIG_DFL, which would end the process); with none, the halt watch
        is off and a guest halted for good runs until it is stopped.
        """
        if len(self.loops) == 1 and not self.watch_halts:
            return self.loops[0].run(observer)  # no threads: hlt exits to pyvmm
        # The handler does nothing: the signal only interrupts KVM_RUN. The
        # embedding program's own handler comes back when the run ends.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(KICK_SIGNAL, _ignore_kick) if main else None
        if not main and signal.getsignal(KICK_SIGNAL) in (signal.SIG_DFL, signal.SIG_IGN, None):
            self.watch_halts = False
        with self._lock:  # what a previous run (stopped by a debugger) found is stale
            self._stuck.clear()
        try:
            if len(self.loops) == 1:
                return self._run_one(observer)
            return self._run_threads(observer)
        finally:
            if main and previous is not None:  # None: installed from C, cannot be put back
                signal.signal(KICK_SIGNAL, previous)

    def _run_one(self, observer: ExitObserver | None) -> RunOutcome:
        """One vCPU, in this thread, with the halt watch. The loop can run again after
        a debugger's stop: only a stop of the whole run (`request_stop`) is final."""
        ident = self._enter(self.loops[0].vcpu.vcpu_id)
        try:
            return self._run_watched(0, observer)
        finally:
            self._leave(ident, secondary=False)

    def _run_threads(self, observer: ExitObserver | None) -> RunOutcome:
        try:
            self._start_threads()
            ident = self._enter(self.loops[0].vcpu.vcpu_id)
            try:
                outcome = self._run_watched(0, observer)
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
            if self._threads:
                self._all_finished.clear()
            else:
                self._all_finished.set()  # one vCPU (with the halt watch): nothing to wait for
        # New threads inherit this mask. A signal that comes meanwhile waits, and
        # its handler runs in this thread as soon as the mask is put back.
        with signals_blocked(keep=frozenset({KICK_SIGNAL})):
            for index, thread in enumerate(self._threads):
                try:
                    thread.start()
                except RuntimeError as error:  # "can't start new thread": out of threads
                    self._give_up_starting(index, error)
                    break

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


def _ignore_kick(signum: int, frame: object) -> None:
    """The kick's handler: nothing to do, the signal only interrupts KVM_RUN."""
