"""The vCPU group's stop protocol, with fake vCPU loops: no KVM, real threads.

The kick that interrupts a KVM_RUN is `pthread_kill`; sent to a thread that has
already ended it is undefined behaviour (a SIGSEGV with glibc). These tests
replace `pthread_kill` with a checker that takes its time, as a kicker can be
descheduled between choosing a thread and signalling it, and then fails the
run if that thread has ended meanwhile.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from pyvmm.machine import vcpu_group
from pyvmm.machine.outcome import EXIT_HALTED, OutcomeKind, RunOutcome
from pyvmm.machine.run_signals import (
    KICK_INTERVAL,
    StoppedBySignal,
    stop_on_signals,
    stop_signals_raise,
)
from pyvmm.machine.vcpu_group import KICK_SIGNAL, VcpuGroup

HALTED = RunOutcome(OutcomeKind.HALTED, EXIT_HALTED, "guest halted")


@dataclass
class FakeVcpu:
    vcpu_id: int
    run_struct: Any = None


@dataclass
class FakeLoop:
    """A vCPU loop that runs until asked to stop, or ends at once with `ends_with`."""

    vcpu_id: int
    ends_with: RunOutcome | None = None
    stopped: threading.Event = field(default_factory=threading.Event)
    blocked_signals: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.vcpu = FakeVcpu(self.vcpu_id)

    def request_stop(self, outcome: RunOutcome) -> None:
        self.stopped.set()

    def run(self, observer: object = None) -> RunOutcome:
        self.blocked_signals = set(signal.pthread_sigmask(signal.SIG_BLOCK, []))
        if self.ends_with is not None:
            return self.ends_with
        self.stopped.wait(30)
        return RunOutcome(OutcomeKind.HALTED, EXIT_HALTED, f"stopped {self.vcpu_id}")


class KickChecker:
    """Stands in for signal.pthread_kill: records each kick and whether its thread was gone."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.kicks: Counter[int] = Counter()
        self.to_ended_threads = 0
        self._lock = threading.Lock()

    def __call__(self, ident: int, signum: int) -> None:
        assert signum == KICK_SIGNAL
        time.sleep(self.delay)  # the kicker, descheduled after choosing its target
        alive = any(thread.ident == ident and thread.is_alive() for thread in threading.enumerate())
        with self._lock:
            self.kicks[ident] += 1
            self.to_ended_threads += not alive


def make_group(cpus: int, first: RunOutcome | None = HALTED) -> VcpuGroup:
    loops = [FakeLoop(0, ends_with=first), *(FakeLoop(index) for index in range(1, cpus))]
    return VcpuGroup(loops)  # type: ignore[arg-type]


def test_no_kick_reaches_a_thread_that_has_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    # The old protocol checked is_alive() and then signalled: threads ending in
    # between got pthread_kill on a dead id (pyvmm -smp 256 died of SIGSEGV).
    checker = KickChecker(delay=0.002)
    monkeypatch.setattr(vcpu_group.signal, "pthread_kill", checker)
    for _ in range(5):
        outcome = make_group(24).run()
        assert outcome is HALTED
    assert checker.to_ended_threads == 0
    assert checker.kicks  # the check did run


def test_a_stop_kicks_each_thread_once_not_each_thread_per_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every vCPU thread that ends asks the group to stop; only the first request
    # may kick, or stopping N vCPUs sends N * N signals.
    checker = KickChecker(delay=0)
    monkeypatch.setattr(vcpu_group.signal, "pthread_kill", checker)
    cpus = 200
    group = make_group(cpus)
    assert group.run() is HALTED
    assert checker.to_ended_threads == 0
    # One kick each; a thread slow to leave its loop gets another every
    # REKICK_INTERVAL, so allow a few rounds, far below cpus per thread.
    assert sum(checker.kicks.values()) <= 3 * cpus, checker.kicks.most_common(3)
    assert all(not thread.is_alive() for thread in group._threads)


def test_the_first_outcome_wins_from_a_secondary_vcpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vcpu_group.signal, "pthread_kill", KickChecker(delay=0))
    fault = RunOutcome(OutcomeKind.TRIPLE_FAULT, 4, "vCPU 5: guest triple-faulted")
    loops = [FakeLoop(index) for index in range(8)]
    loops[5].ends_with = fault
    assert VcpuGroup(loops).run() is fault  # type: ignore[arg-type]


def test_vcpu_threads_leave_process_signals_to_the_main_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vcpu_group.signal, "pthread_kill", KickChecker(delay=0))
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    group = make_group(3)
    group.run()
    secondary = group.loops[1].blocked_signals  # type: ignore[attr-defined]
    stop_signals = {signal.SIGALRM, signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    assert stop_signals <= secondary
    assert KICK_SIGNAL not in secondary
    assert not stop_signals & group.loops[0].blocked_signals  # type: ignore[attr-defined]
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


def test_a_thread_that_cannot_start_ends_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vcpu_group.signal, "pthread_kill", KickChecker(delay=0))
    start = threading.Thread.start
    started = 0

    def start_or_fail(thread: threading.Thread) -> None:
        nonlocal started
        if thread.name.startswith("vcpu"):
            started += 1
            if started == 3:
                raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_or_fail)
    group = make_group(6, first=None)  # vCPU 0 runs until stopped, too
    outcome = group.run()
    assert outcome.kind is OutcomeKind.VMM_ERROR
    assert outcome.message == "cannot start a thread for vCPU 3: can't start new thread"
    assert len(group._threads) == 2 and all(not t.is_alive() for t in group._threads)


@pytest.mark.parametrize("cpus", [1, 3])
def test_a_host_that_gives_no_timer_ends_the_run_as_a_vmm_error(
    monkeypatch: pytest.MonkeyPatch, cpus: int
) -> None:
    # timer_create fails with EAGAIN once RLIMIT_SIGPENDING is reached: the halt
    # watch cannot run, and a run that could never notice a halted guest must not start.
    def no_timer(signum: int) -> None:
        raise OSError(errno.EAGAIN, "timer_create: Resource temporarily unavailable")

    monkeypatch.setattr(vcpu_group, "KickTimer", no_timer)
    monkeypatch.setattr(vcpu_group.signal, "pthread_kill", KickChecker(delay=0))
    loops = [FakeLoop(index) for index in range(cpus)]
    group = VcpuGroup(loops, watch_halts=True)  # type: ignore[arg-type]
    outcome = group.run()
    assert outcome.kind is OutcomeKind.VMM_ERROR
    assert re.fullmatch(
        r"vCPU \d: no timer for the halt watch: \[Errno 11\] timer_create: "
        r"Resource temporarily unavailable",
        outcome.message,
    ), outcome.message
    assert group._watches == [None] * cpus
    assert all(not thread.is_alive() for thread in group._threads)


def test_a_stop_request_from_a_signal_handler_during_a_stop_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The timeout and stop-signal handlers call request_stop in the main thread,
    # which may hold the group's lock right then: it must not deadlock.
    monkeypatch.setattr(vcpu_group.signal, "pthread_kill", KickChecker(delay=0))
    group = make_group(2)
    with stop_on_signals(group.request_stop, None), group._lock:
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs here, lock held
    assert group._first is not None and group._first.kind is OutcomeKind.INTERRUPTED
    assert all(loop.stopped.is_set() for loop in group.loops)  # type: ignore[attr-defined]


def test_the_alarm_keeps_coming_after_the_deadline() -> None:
    # A SIGALRM landing just before KVM_RUN starts is seen only when KVM_RUN
    # returns: the next one, KICK_INTERVAL later, makes it return.
    requests: list[RunOutcome] = []
    with stop_on_signals(requests.append, 0.02):
        deadline = time.monotonic() + 10
        while len(requests) < 3 and time.monotonic() < deadline:
            time.sleep(KICK_INTERVAL)
    assert len(requests) >= 3
    assert {outcome.kind for outcome in requests} == {OutcomeKind.TIMEOUT}
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_while_building_raises(signum: int) -> None:
    before = signal.getsignal(signum)
    assert before is signal.SIG_DFL
    with pytest.raises(StoppedBySignal) as raised, stop_signals_raise():
        os.kill(os.getpid(), signum)
        time.sleep(1)  # not reached: the handler raises at once
    assert str(raised.value) == f"stopped by {signal.Signals(signum).name}"
    assert (raised.value.signal, raised.value.exit_status) == (signum, 128 + signum)
    assert signal.getsignal(signum) is before


def test_an_embedding_programs_own_handler_is_left_alone() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with stop_signals_raise():
            os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- the halt watch: the run ends when no vCPU can ever run again -------------


class SimRun:
    immediate_exit = 0


class SimVcpu:
    """A vCPU whose KVM_GET_MP_STATE and RFLAGS the test sets."""

    def __init__(self, vcpu_id: int, mp_state: int, rflags: int = 0x2) -> None:
        self.vcpu_id, self.mp_state, self.rflags = vcpu_id, mp_state, rflags
        self.run_struct = SimRun()

    def get_mp_state(self) -> int:
        return self.mp_state

    def get_regs(self) -> Any:
        return type("Regs", (), {"rflags": self.rflags})()


class SimLoop:
    """A vCPU loop whose KVM_RUN returns only when kicked: each return calls the hook."""

    def __init__(self, vcpu: SimVcpu) -> None:
        self.vcpu = vcpu
        self.device_lock = None
        self.on_interrupted: Any = None
        self.kicked = threading.Event()
        self.outcome: RunOutcome | None = None

    @property
    def stopping(self) -> bool:
        return self.outcome is not None

    def request_stop(self, outcome: RunOutcome) -> None:
        self.outcome = outcome
        self.kicked.set()

    def interrupted(self) -> None:
        """What VcpuLoop does after an interrupted KVM_RUN."""
        self.vcpu.run_struct.immediate_exit = 0
        self.on_interrupted(self)


class DueOnce:
    """A kick timer whose tick has come: the next interrupted KVM_RUN is a check."""

    def __init__(self) -> None:
        self.ticks = 1

    def due(self) -> bool:
        ticked, self.ticks = self.ticks > 0, 0
        return ticked

    def close(self) -> None:
        pass


def test_a_vcpu_found_stuck_and_woken_since_does_not_end_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyvmm._kvm import lib

    halted, runnable, waiting = (
        lib.KVM_MP_STATE_HALTED,
        lib.KVM_MP_STATE_RUNNABLE,
        lib.KVM_MP_STATE_UNINITIALIZED,
    )
    boot, ap = SimVcpu(0, runnable), SimVcpu(1, waiting)
    loops = [SimLoop(boot), SimLoop(ap)]
    group = VcpuGroup(loops, watch_halts=True)  # type: ignore[arg-type]
    by_thread: dict[int, SimLoop] = {}
    monkeypatch.setattr(
        vcpu_group.signal, "pthread_kill", lambda ident, signum: by_thread[ident].kicked.set()
    )

    def ap_thread() -> None:  # the AP's KVM_RUN: back in Python at each kick
        by_thread[group._enter(1)] = loops[1]
        try:
            while not loops[1].stopping:
                if loops[1].kicked.wait(0.01):
                    loops[1].kicked.clear()
                    loops[1].interrupted()
        finally:
            group._leave(threading.get_ident(), secondary=False)

    thread = threading.Thread(target=ap_thread)
    thread.start()
    try:
        while not by_thread:
            time.sleep(0.001)
        # The AP looks at itself: waiting for INIT/SIPI, stuck.
        group._watches[1] = DueOnce()  # type: ignore[assignment]
        loops[1].kicked.set()
        while 1 not in group._stuck:
            time.sleep(0.001)
        # The BSP sends it a SIPI (the AP now runs), then halts with IF=0 and
        # looks at itself: both were found stuck, but the AP no longer is.
        ap.mp_state = runnable
        boot.mp_state = halted
        group._watches[0] = DueOnce()  # type: ignore[assignment]
        loops[0].interrupted()
        assert group._first is None  # the confirmation read the AP again
        assert not group._confirming and group._stuck == set()
        # The AP halts too, with IF=0: now nothing can run again.
        ap.mp_state = halted
        group._watches[1] = DueOnce()  # type: ignore[assignment]
        loops[1].kicked.set()
        while 1 not in group._stuck:
            time.sleep(0.001)
        group._watches[0] = DueOnce()  # type: ignore[assignment]
        loops[0].interrupted()
        assert group._first is not None and group._first.kind is OutcomeKind.HALTED
        assert group._first.message == "guest halted (vCPUs 0-1 halted, IF=0)"
    finally:
        loops[1].request_stop(HALTED)
        thread.join()
