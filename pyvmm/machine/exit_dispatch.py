"""Serve a decoded exit (pyvmm.kvm.exits), and turn the exits that end a run into outcomes.

The exit loop's fast path (vcpu_loop.py) serves single port I/O and MMIO up
to 8 bytes without decoding them into objects; everything else comes here:
string I/O, the observed loop's exits (--trace, --stats, gdb), and the exits
that end the run (KVM API doc 5, "The kvm_run structure"). Loaded at the
first such exit, so that a run that never has one never imports it.
"""

from __future__ import annotations

import time

from pyvmm.arch.x86_64.emulation_failure import describe_internal_error
from pyvmm.arch.x86_64.pio import handle_io_in, handle_io_out
from pyvmm.arch.x86_64.register_dump import format_registers
from pyvmm.arch.x86_64.registers import RFLAGS_IF
from pyvmm.arch.x86_64.triple_fault import explain_triple_fault
from pyvmm.kvm.exits import (
    Debug,
    FailEntry,
    Hlt,
    InternalError,
    IoapicEoi,
    IoIn,
    IoOut,
    IrqWindowOpen,
    MmioRead,
    MmioWrite,
    Shutdown,
    SystemEvent,
    Unknown,
    VcpuExit,
)
from pyvmm.kvm.host import kvm_backend
from pyvmm.machine.outcome import (
    EXIT_FAIL_ENTRY,
    EXIT_GUEST_CRASH,
    EXIT_HALTED,
    EXIT_INTERNAL_ERROR,
    EXIT_TRIPLE_FAULT,
    HALTED_WAITING,
    OutcomeKind,
    RunOutcome,
    powered_off,
    reset_requested,
    vmm_error,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyvmm.machine.vcpu_loop import VcpuLoop


def dispatch(loop: VcpuLoop, exit: VcpuExit) -> RunOutcome | None:
    """Serve one decoded exit of `loop`'s vCPU; an outcome when it ends the run."""
    match exit:
        case IoOut() as io_out:
            handle_io_out(io_out, loop.pio_bus)
        case IoIn() as io_in:
            handle_io_in(io_in, loop.pio_bus)
        case MmioWrite(gpa=gpa, size=size, data=data):
            loop.mmio_bus.write(gpa, size, int.from_bytes(data, "little"))
        case MmioRead(gpa=gpa, size=size, buffer=buffer):
            value = loop.mmio_bus.read(gpa, size)
            if value >> (8 * size) or value < 0:
                raise loop.mmio_bus.read_too_wide(gpa, size, value)
            buffer[0:size] = value.to_bytes(size, "little")
        case Debug() as debug if loop.syscall_repair is not None:
            # The SYSCALL repair's breakpoints and steps (arch/x86_64/syscall_repair.py).
            started = time.perf_counter_ns()
            ours = loop.syscall_repair.on_debug(debug)
            loop.syscall_repair.ns += time.perf_counter_ns() - started
            if ours:
                return None
            return final_outcome(loop, debug)
        case IrqWindowOpen() if loop.split_irqchip is not None:
            loop.split_irqchip.inject()
        case IoapicEoi(vector=vector) if loop.split_irqchip is not None:
            loop.split_irqchip.eoi(vector)
        case InternalError() as failure if (
            failure.is_emulation_failure and loop.assists is not None
        ):
            return _assist(loop, failure)
        case final:
            return final_outcome(loop, final)
    if loop.syscall_repair is not None:
        loop.syscall_repair.look()  # has the guest set SYSCALL up, or moved its #PF handler?
    return None


def _assist(loop: VcpuLoop, failure: InternalError) -> RunOutcome | None:
    """Perform the instruction KVM's emulator gave up on when pyvmm's table has it
    (pyvmm.arch.x86_64.assist); otherwise the internal-error outcome, as without it."""
    from pyvmm.arch.x86_64.assist.vcpu import assist

    started = time.perf_counter_ns()
    result = assist(loop.vcpu, failure.insn_bytes, loop.memory, loop.max_phys_bits)
    loop.assist_ns += time.perf_counter_ns() - started
    assists = loop.assists
    if result.performed and result.mnemonic is not None and assists is not None:
        assists[result.mnemonic] = assists.get(result.mnemonic, 0) + 1
        return None
    return final_outcome(loop, failure, result.reason)


def final_outcome(loop: VcpuLoop, exit: VcpuExit, not_assisted: str | None = None) -> RunOutcome:
    """The outcome of an exit that ends the run (or a DEBUG outcome for gdb).

    `not_assisted`: why pyvmm's assist layer did not perform the instruction
    of an emulation failure, though its table has it.
    """
    if isinstance(exit, Debug):
        return RunOutcome(OutcomeKind.DEBUG, EXIT_HALTED, "debug trap", debug=exit)
    if isinstance(exit, Hlt):  # only without the in-kernel irqchip: KVM serves it then
        if loop.vcpu.get_regs().rflags & RFLAGS_IF:
            # The guest waits for an interrupt no controller can deliver: say so.
            return RunOutcome(OutcomeKind.HALTED, EXIT_HALTED, HALTED_WAITING)
        return RunOutcome(OutcomeKind.HALTED, EXIT_HALTED, "guest halted")
    if isinstance(exit, Shutdown):
        return _triple_fault(loop)
    if isinstance(exit, FailEntry):
        return RunOutcome(
            OutcomeKind.FAIL_ENTRY,
            EXIT_FAIL_ENTRY,
            "KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY): hardware reason "
            f"0x{exit.hardware_entry_failure_reason:x} on cpu {exit.cpu}",
            loop.register_dump(),
        )
    if isinstance(exit, InternalError):
        regs, sregs = loop.vcpu.get_regs(), loop.vcpu.get_sregs()
        message = describe_internal_error(exit, regs, sregs, loop.memory, loop.max_phys_bits)
        if not_assisted:
            message += f"; pyvmm's assist layer did not perform it: {not_assisted}"
        return RunOutcome(
            OutcomeKind.INTERNAL_ERROR,
            EXIT_INTERNAL_ERROR,
            loop.who + message,
            format_registers(regs, sregs),
        )
    if isinstance(exit, SystemEvent):
        # A reset ends the run as under `qemu -no-reboot` (and Firecracker): status 0.
        if exit.name == "shutdown":
            return powered_off("KVM_SYSTEM_EVENT_SHUTDOWN")
        if exit.name == "reset":
            return reset_requested("KVM_SYSTEM_EVENT_RESET")
        return RunOutcome(
            OutcomeKind.SYSTEM_EVENT,
            EXIT_GUEST_CRASH,
            f"guest reported a system {exit.name} (KVM_EXIT_SYSTEM_EVENT)",
            loop.register_dump(),
        )
    name = exit.name if isinstance(exit, Unknown) else type(exit).__name__
    unhandled = vmm_error(f"{loop.who}unhandled exit {name}")
    return RunOutcome(
        unhandled.kind, unhandled.exit_status, unhandled.message, loop.register_dump()
    )


def _triple_fault(loop: VcpuLoop) -> RunOutcome:
    regs, sregs = loop.vcpu.get_regs(), loop.vcpu.get_sregs()
    why = None
    if loop.memory is not None and loop.keeps_32bit_paging is not None:
        why = explain_triple_fault(
            regs, sregs, loop.memory, loop.keeps_32bit_paging, kvm_backend(), loop.max_phys_bits
        )
    return RunOutcome(
        OutcomeKind.TRIPLE_FAULT,
        EXIT_TRIPLE_FAULT,
        f"{loop.who}guest triple-faulted (KVM_EXIT_SHUTDOWN)" + (f" {why}" if why else ""),
        format_registers(regs, sregs),
    )
