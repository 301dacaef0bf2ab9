"""Whether a vCPU can ever run again, and why a stopped run had not ended.

Read from each vCPU: its multiprocessing state (KVM_GET_MP_STATE, KVM API doc
4.38: RUNNABLE, HALTED, UNINITIALIZED or INIT_RECEIVED for an application
processor still waiting for INIT/SIPI...) and RFLAGS.IF (KVM_GET_REGS).

With the in-kernel irqchip `hlt` does not exit to pyvmm: KVM waits for an
interrupt itself. A vCPU is *stuck* when nothing it can receive from a device
would make it run again: halted with IF=0 (a maskable interrupt cannot wake it,
Intel SDM vol. 2A "HLT") or waiting for INIT/SIPI. When every vCPU is stuck the
guest can never run again, and the run ends as halted (see vcpu_group.py). Only
NMI, SMI and INIT wake a halted vCPU with IF=0; pyvmm's devices raise none of
them, so they could only come from another vCPU, which is stuck too.

After a run stopped from outside (--timeout, a signal), the same facts say why
it had not ended: only facts read from the vCPUs, no guesses; a vCPU that can
run gets no explanation at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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


class VcpuState:
    """One vCPU after the stop: `mp_state` is a KVM_MP_STATE_* value, `interrupts_on` RFLAGS.IF.

    Read-only once made; equal when every field is.
    """

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("interrupts_on", "mp_state", "vcpu_id")

    def __init__(self, vcpu_id: int, mp_state: int, interrupts_on: bool) -> None:
        self.vcpu_id = vcpu_id
        self.mp_state = mp_state
        self.interrupts_on = interrupts_on

    def _values(self) -> tuple[int, int, bool]:
        return (self.vcpu_id, self.mp_state, self.interrupts_on)

    def __eq__(self, other: object) -> bool:
        if type(other) is not VcpuState:
            return NotImplemented
        return self._values() == other._values()

    def __repr__(self) -> str:
        return "VcpuState(vcpu_id={!r}, mp_state={!r}, interrupts_on={!r})".format(*self._values())

    @property
    def stuck(self) -> bool:
        """True when no interrupt from a device can make this vCPU run again."""
        if self.mp_state == lib.KVM_MP_STATE_HALTED:
            return not self.interrupts_on
        return self.mp_state in WAITING_FOR_SIPI

    def describe(self) -> str:
        what = MP_STATE_NAMES.get(self.mp_state, f"in KVM mp_state {self.mp_state}")
        if self.mp_state == lib.KVM_MP_STATE_HALTED:
            what += f", IF={int(self.interrupts_on)}"
        return what


def read_vcpu_state(vcpu: Vcpu) -> VcpuState:
    """One vCPU's state; call it while that vCPU is not inside KVM_RUN. Raises KvmError."""
    mp_state = vcpu.get_mp_state()
    # RFLAGS matters only to a halted vCPU: one ioctl, not two, for a running one.
    interrupts_on = (
        bool(vcpu.get_regs().rflags & RFLAGS_IF) if mp_state == lib.KVM_MP_STATE_HALTED else False
    )
    return VcpuState(vcpu.vcpu_id, mp_state, interrupts_on)


def read_vcpu_states(vcpus: Iterable[Vcpu]) -> list[VcpuState] | None:
    """Each vCPU's state (KVM_GET_MP_STATE, KVM_GET_REGS); None if KVM refuses either.

    Call only when no vCPU runs (after `Machine.run` returned).
    """
    try:
        return [
            VcpuState(vcpu.vcpu_id, vcpu.get_mp_state(), bool(vcpu.get_regs().rflags & RFLAGS_IF))
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
    if all(state.stuck for state in states):
        # The halt watch ends such a run as halted; the stop came first.
        return f"{found}: no vCPU could run again"
    # Halted with IF=1 is an idle loop: it may well be taking interrupts (a timer tick)
    # between its hlts, and would go on for ever; pyvmm cannot tell none will come.
    return (
        f"{found}: idle, waiting in hlt with interrupts enabled (IF=1) for the next one, as "
        "an operating system's idle loop does for ever; a guest that should end does so "
        "through the debug-exit port (0xf4) or an ACPI power-off"
    )


def describe_halted(states: Sequence[VcpuState]) -> str:
    """The HALTED outcome's message: `guest halted`, with each vCPU's state when several."""
    if len(states) <= 1:
        return "guest halted"
    return f"guest halted ({_summarize(states)})"


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
