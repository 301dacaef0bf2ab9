"""Odd exit statuses belong to debug-exit alone: every other outcome is even.

QEMU-style test harnesses boot a kernel that writes 0 to the debug-exit port
on success, and read status 1 ((0 << 1) | 1) as PASS. A crashed guest or a
failed VMM must never look like that, nor like any other debug-exit value.
Each outcome is produced here by the code that makes it in a real run (the
exit loop on scripted exits, the debug-exit device, the outcome helpers).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from pyvmm._kvm import lib
from pyvmm.arch.x86_64.no_bios import NO_BIOS_PORT
from pyvmm.devices.bus import Bus
from pyvmm.machine.builder import attach_debug_exit
from pyvmm.machine.outcome import (
    EXIT_SIGNAL_BASE,
    OutcomeKind,
    RunOutcome,
    exit_limit_reached,
    interrupted,
    timed_out,
    vmm_error,
)
from pyvmm.machine.reset import attach_reset_sources
from pyvmm.memory.guest_memory import GuestMemory
from tests.unit.test_vcpu_loop import make_loop, reason


def system_event(event_type: int) -> Any:
    def fill(run: Any) -> bool:
        run.exit_reason = lib.KVM_EXIT_SYSTEM_EVENT
        run.system_event.type = event_type
        run.system_event.ndata = 0
        return True

    return fill


def loop_outcome(step: Any) -> RunOutcome:
    loop, _, _ = make_loop([step])
    return loop.run()


def debug_exit_outcomes() -> Iterator[RunOutcome]:
    """The outcome of a write of every byte value to the debug-exit port."""
    for value in range(256):
        seen: list[RunOutcome] = []
        bus = Bus("pio")
        attach_debug_exit(bus, seen.append)
        bus.write(0xF4, 1, value)
        yield seen[0]


def unhandled_exception_outcome() -> RunOutcome:
    """A real-mode #UD that reaches pyvmm's no-BIOS stub, served by the trap."""
    from tests.unit.test_no_bios import enter_stub, make_trap

    with GuestMemory.from_ranges([(0, 2 << 20)]) as memory:
        bus, vcpu, ended = make_trap(memory)
        memory.write(0x7C0E, b"\x0f\x0b")  # ud2
        enter_stub(memory, vcpu, 6, 0, 0x7C0E)
        bus.write(NO_BIOS_PORT, 1, 0)
    return ended[0]


def reset_outcomes() -> list[RunOutcome]:
    """The guest resetting the machine each way a PC can: 0x64 <- 0xfe, port 0x92, 0xcf9."""
    seen: list[RunOutcome] = []
    bus = Bus("pio")
    attach_reset_sources(bus, None, seen.append)
    for port, value in ((0x64, 0xFE), (0x92, 0x01), (0xCF9, 0x06)):
        bus.write(port, 1, value)
    return seen


def monitor_quit_outcome() -> RunOutcome:
    """The monitor's `quit` (--monitor), through the machine's side of the monitor."""
    from pyvmm.machine.monitor import MachineControl
    from tests.unit.test_monitor import FakeGroup, fake_machine

    group = FakeGroup()
    MachineControl(fake_machine(group)).quit()
    return group.stops[0]


def every_ending() -> list[RunOutcome]:
    endings = [
        loop_outcome(reason(lib.KVM_EXIT_HLT)),
        loop_outcome(reason(lib.KVM_EXIT_SHUTDOWN)),
        loop_outcome(reason(lib.KVM_EXIT_FAIL_ENTRY)),
        loop_outcome(reason(lib.KVM_EXIT_INTERNAL_ERROR)),
        loop_outcome(reason(lib.KVM_EXIT_HYPERCALL)),  # an exit pyvmm cannot handle
        *(
            loop_outcome(system_event(event))
            for event in (
                lib.KVM_SYSTEM_EVENT_SHUTDOWN,
                lib.KVM_SYSTEM_EVENT_RESET,
                lib.KVM_SYSTEM_EVENT_CRASH,
                99,  # an event type this pyvmm does not know
            )
        ),
        *debug_exit_outcomes(),
        *reset_outcomes(),
        unhandled_exception_outcome(),
        monitor_quit_outcome(),
        timed_out(1.0),
        exit_limit_reached(10),
        vmm_error("a KVM call failed"),
        *(interrupted(s.name, s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)),
    ]
    return endings


def test_every_outcome_kind_that_ends_a_run_is_enumerated() -> None:
    kinds = {outcome.kind for outcome in every_ending()}
    # DEBUG is a debugger's stop, after which the run goes on: it never ends one.
    assert kinds == set(OutcomeKind) - {OutcomeKind.DEBUG}


@pytest.mark.parametrize("outcome", every_ending(), ids=lambda o: f"{o.kind.value}-{o.exit_status}")
def test_only_debug_exit_is_odd(outcome: RunOutcome) -> None:
    assert 0 <= outcome.exit_status <= 255
    if outcome.kind is OutcomeKind.DEBUG_EXIT:
        assert outcome.exit_status % 2 == 1
    elif outcome.kind is OutcomeKind.INTERRUPTED:
        # Not an exit status: the CLI ends by the signal; a shell shows 128+N.
        assert outcome.signal is not None
        assert outcome.exit_status == EXIT_SIGNAL_BASE + outcome.signal
    else:
        assert outcome.exit_status % 2 == 0, outcome


def test_guest_faults_and_vmm_failures_are_told_apart() -> None:
    """Each guest fault has its own status, none of them 0, and none is pyvmm's."""
    statuses = {
        outcome.kind: outcome.exit_status
        for outcome in every_ending()
        if outcome.kind
        in (
            OutcomeKind.TRIPLE_FAULT,
            OutcomeKind.INTERNAL_ERROR,
            OutcomeKind.FAIL_ENTRY,
            OutcomeKind.UNHANDLED_EXCEPTION,
            OutcomeKind.VMM_ERROR,
            OutcomeKind.TIMEOUT,
            OutcomeKind.EXIT_LIMIT,
        )
    }
    assert len(set(statuses.values())) == len(statuses) and 0 not in statuses.values()


def test_system_events() -> None:
    shutdown, reset, crash, unknown = (
        loop_outcome(system_event(event))
        for event in (
            lib.KVM_SYSTEM_EVENT_SHUTDOWN,
            lib.KVM_SYSTEM_EVENT_RESET,
            lib.KVM_SYSTEM_EVENT_CRASH,
            99,
        )
    )
    assert (shutdown.exit_status, reset.exit_status) == (0, 0)  # as qemu -no-reboot
    assert (shutdown.kind, reset.kind) == (OutcomeKind.POWER_OFF, OutcomeKind.RESET)
    assert not shutdown.kind.is_abnormal and not reset.kind.is_abnormal
    assert crash.exit_status == unknown.exit_status == 10
    assert crash.kind is unknown.kind is OutcomeKind.SYSTEM_EVENT and crash.kind.is_abnormal


def test_a_guest_reset_ends_the_run_with_status_0_as_qemu_no_reboot() -> None:
    outcomes = reset_outcomes()
    assert [outcome.kind for outcome in outcomes] == [OutcomeKind.RESET] * 3
    assert [outcome.exit_status for outcome in outcomes] == [0, 0, 0]
    assert [outcome.message.split(": ", 1)[0] for outcome in outcomes] == [
        "guest reset the machine"
    ] * 3
    assert "0x64" in outcomes[0].message and "0x92" in outcomes[1].message
    assert "0xcf9" in outcomes[2].message
