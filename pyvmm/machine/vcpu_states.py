"""Why a run that was stopped from outside (--timeout, a signal) had not ended by itself.

Read after the stop, from each vCPU: its multiprocessing state
(KVM_GET_MP_STATE, KVM API doc 4.38: RUNNABLE, HALTED, UNINITIALIZED or
INIT_RECEIVED for an application processor still waiting for INIT/SIPI...)
and RFLAGS.IF (KVM_GET_REGS). When nothing could run, because every vCPU is
halted or waits for INIT/SIPI, that is said; a halted vCPU 0 with IF=0 is the
usual trap: with the in-kernel irqchip `hlt` waits for an interrupt instead
of ending the run (without it, `hlt` exits to pyvmm and ends the run, so a
vCPU found HALTED means the irqchip is there). Only facts read from the
vCPUs, no guesses: a vCPU that can run gets no explanation at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pyvmm._kvm import lib
from pyvmm.arch.x86_64.registers import RFLAGS_IF
from pyvmm.errors import PyvmmError
from pyvmm.kvm.vcpu import Vcpu

# An application processor that has not been started yet (KVM API doc 4.38).
WAITING_FOR_SIPI = frozenset({lib.KVM_MP_STATE_UNINITIALIZED, lib.KVM_MP_STATE_INIT_RECEIVED})
MP_STATE_NAMES = {
    lib.KVM_MP_STATE_RUNNABLE: "runnable",
    lib.KVM_MP_STATE_UNINITIALIZED: "waiting for INIT/SIPI",
    lib.KVM_MP_STATE_INIT_RECEIVED: "waiting for INIT/SIPI",
    lib.KVM_MP_STATE_HALTED: "halted",
    lib.KVM_MP_STATE_SIPI_RECEIVED: "SIPI received",
}


@dataclass(frozen=True)
class VcpuState:
    """One vCPU after the stop: `mp_state` is a KVM_MP_STATE_* value, `interrupts_on` RFLAGS.IF."""

    vcpu_id: int
    mp_state: int
    interrupts_on: bool

    def describe(self) -> str:
        what = MP_STATE_NAMES.get(self.mp_state, f"in KVM mp_state {self.mp_state}")
        if self.mp_state == lib.KVM_MP_STATE_HALTED:
            what += f", IF={int(self.interrupts_on)}"
        return what


def read_vcpu_states(vcpus: Iterable[Vcpu]) -> list[VcpuState] | None:
    """Each vCPU's state (KVM_GET_MP_STATE, KVM_GET_REGS); None if KVM refuses either.

    Call only when no vCPU runs (after `Machine.run` returned).
    """
    try:
        return [
            VcpuState(
                vcpu.vcpu_id, vcpu.get_mp_state(), bool(vcpu.get_regs().rflags & RFLAGS_IF)
            )
            for vcpu in vcpus
        ]
    except PyvmmError:
        return None


def explain_never_ended(states: Sequence[VcpuState]) -> str | None:
    """One sentence when no vCPU could run at the stop, or None (something could run)."""
    if not states:
        return None
    halted = [state for state in states if state.mp_state == lib.KVM_MP_STATE_HALTED]
    waiting = [state for state in states if state.mp_state in WAITING_FOR_SIPI]
    if not halted or len(halted) + len(waiting) != len(states):
        return None
    what = (
        "every vCPU was halted or waiting for INIT/SIPI"
        if waiting
        else "every vCPU was halted"
        if len(states) > 1
        else "the vCPU was halted"
    )
    found = f"when the run was stopped, {what} ({_summarize(states)})"
    boot = states[0]
    if boot.mp_state == lib.KVM_MP_STATE_HALTED and not boot.interrupts_on:
        return (
            f"{found}: with the in-kernel irqchip (-smp > 1 or --kernel-irqchip on), hlt "
            "waits for an interrupt, which IF=0 masks; end the guest through the debug-exit "
            "port (0xf4)"
        )
    return f"{found}: with the in-kernel irqchip, hlt waits for an interrupt"


def _summarize(states: Sequence[VcpuState]) -> str:
    """`vCPU 0 halted, IF=0; vCPUs 1-3 waiting for INIT/SIPI`."""
    groups: list[tuple[str, list[int]]] = []
    for state in states:
        text = state.describe()
        if groups and groups[-1][0] == text and groups[-1][1][-1] == state.vcpu_id - 1:
            groups[-1][1].append(state.vcpu_id)
        else:
            groups.append((text, [state.vcpu_id]))
    parts = []
    for text, ids in groups:
        who = f"vCPU {ids[0]}" if len(ids) == 1 else f"vCPUs {ids[0]}-{ids[-1]}"
        parts.append(f"{who} {text}")
    return "; ".join(parts)
