"""Why a stopped run had not ended: read from the vCPUs' MP state and RFLAGS.IF (no KVM)."""

from __future__ import annotations

from typing import Any

from pyvmm._kvm import ffi, lib
from pyvmm.errors import KvmError
from pyvmm.machine.vcpu_states import (
    VcpuState,
    describe_halted,
    explain_never_ended,
    read_vcpu_state,
    read_vcpu_states,
)

HALTED = lib.KVM_MP_STATE_HALTED
RUNNABLE = lib.KVM_MP_STATE_RUNNABLE
UNINITIALIZED = lib.KVM_MP_STATE_UNINITIALIZED
INIT_RECEIVED = lib.KVM_MP_STATE_INIT_RECEIVED


def states(*pairs: tuple[int, bool]) -> list[VcpuState]:
    return [VcpuState(index, mp_state, on) for index, (mp_state, on) in enumerate(pairs)]


def test_halted_with_interrupts_off_and_aps_never_started() -> None:
    # The halt watch ends such a run as halted; a stop can still come first.
    why = explain_never_ended(states((HALTED, False), (UNINITIALIZED, False)))
    assert why == (
        "when the run was stopped, every vCPU was halted or waiting for INIT/SIPI "
        "(vCPU 0 halted, IF=0; vCPU 1 waiting for INIT/SIPI): no vCPU could run again"
    )


def test_many_vcpus_are_summarised_by_ranges() -> None:
    why = explain_never_ended(
        states((HALTED, False), *[(UNINITIALIZED, False)] * 200, (INIT_RECEIVED, False))
    )
    assert why is not None
    assert "(vCPU 0 halted, IF=0; vCPUs 1-201 waiting for INIT/SIPI)" in why


def test_one_vcpu_halted_waiting_for_an_interrupt() -> None:
    why = explain_never_ended(states((HALTED, True)))
    assert why == (
        "when the run was stopped, the vCPU was halted (vCPU 0 halted, IF=1): idle, waiting "
        "in hlt with interrupts enabled (IF=1) for the next one, as an operating system's idle "
        "loop does for ever; a guest that should end does so through the debug-exit port "
        "(0xf4) or an ACPI power-off"
    )


def test_halted_with_interrupts_on_states_facts_only() -> None:
    why = explain_never_ended(states((HALTED, True), (HALTED, False)))
    assert why is not None
    assert why.startswith(
        "when the run was stopped, every vCPU was halted (vCPU 0 halted, IF=1; vCPU 1 "
        "halted, IF=0): idle, waiting in hlt with interrupts enabled (IF=1)"
    )


def test_stuck_means_no_device_interrupt_can_wake_it() -> None:
    assert VcpuState(0, HALTED, False).stuck
    assert not VcpuState(0, HALTED, True).stuck  # an interrupt would wake it
    assert VcpuState(1, UNINITIALIZED, False).stuck
    assert VcpuState(1, INIT_RECEIVED, False).stuck
    assert not VcpuState(0, RUNNABLE, False).stuck


def test_the_halted_outcome_names_each_vcpu_when_there_are_several() -> None:
    assert describe_halted(states((HALTED, False))) == "guest halted"
    assert describe_halted(states((HALTED, False), (UNINITIALIZED, False))) == (
        "guest halted (vCPU 0 halted, IF=0; vCPU 1 waiting for INIT/SIPI)"
    )


def test_nothing_is_said_while_a_vcpu_can_run() -> None:
    assert explain_never_ended(states((RUNNABLE, False))) is None
    assert explain_never_ended(states((HALTED, False), (RUNNABLE, True))) is None
    assert explain_never_ended(states((UNINITIALIZED, False))) is None  # nothing halted
    assert explain_never_ended([]) is None


class FakeVcpu:
    def __init__(self, vcpu_id: int, mp_state: int, rflags: int, fails: bool = False) -> None:
        self.vcpu_id, self._mp_state, self._rflags, self._fails = vcpu_id, mp_state, rflags, fails

    def get_mp_state(self) -> int:
        if self._fails:
            raise KvmError("KVM_GET_MP_STATE", 22)
        return self._mp_state

    def get_regs(self) -> Any:
        regs = ffi.new("struct kvm_regs *")
        regs.rflags = self._rflags
        return regs


def test_states_are_read_from_each_vcpu() -> None:
    vcpus = [FakeVcpu(0, HALTED, 0x2), FakeVcpu(1, HALTED, 0x202)]
    assert read_vcpu_states(vcpus) == [VcpuState(0, HALTED, False), VcpuState(1, HALTED, True)]


def test_one_state_reads_rflags_only_for_a_halted_vcpu() -> None:
    assert read_vcpu_state(FakeVcpu(3, HALTED, 0x202)) == VcpuState(3, HALTED, True)
    running = FakeVcpu(1, RUNNABLE, 0x202)
    running.get_regs = None  # type: ignore[method-assign]  # must not be called
    assert read_vcpu_state(running) == VcpuState(1, RUNNABLE, False)


def test_a_refused_ioctl_gives_no_states() -> None:
    assert read_vcpu_states([FakeVcpu(0, HALTED, 0x2, fails=True)]) is None
