"""Decode a `struct kvm_run` into a typed exit (pure: no ioctl, no dispatch).

kvm-ioctls' `VcpuExit` is the model: the exit loop first asks *what* happened,
then decides what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyvmm._kvm import ffi, lib

# Names of every exit reason the header defines, for messages and traces.
EXIT_REASON_NAMES: dict[int, str] = {
    getattr(lib, name): name
    for name in dir(lib)
    if name.startswith("KVM_EXIT_") and not name.startswith("KVM_EXIT_IO_")
}

SYSTEM_EVENT_NAMES: dict[int, str] = {
    lib.KVM_SYSTEM_EVENT_SHUTDOWN: "shutdown",
    lib.KVM_SYSTEM_EVENT_RESET: "reset",
    lib.KVM_SYSTEM_EVENT_CRASH: "crash",
}


def exit_reason_name(reason: int) -> str:
    return EXIT_REASON_NAMES.get(reason, f"exit reason {reason}")


@dataclass(frozen=True, slots=True)
class IoIn:
    """`in`/`ins`: the handler fills `buffer` (count * size bytes, in kvm_run)."""

    port: int
    size: int
    count: int
    buffer: Any


@dataclass(frozen=True, slots=True)
class IoOut:
    """`out`/`outs`: `data` holds count * size bytes, little-endian units."""

    port: int
    size: int
    count: int
    data: bytes


@dataclass(frozen=True, slots=True)
class MmioRead:
    """A load from guest-physical memory no slot backs; fill `buffer` (size bytes)."""

    gpa: int
    size: int
    buffer: Any


@dataclass(frozen=True, slots=True)
class MmioWrite:
    gpa: int
    size: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Hlt:
    pass


@dataclass(frozen=True, slots=True)
class Shutdown:
    """The guest triple-faulted (or asked for a shutdown KVM could not deliver)."""


@dataclass(frozen=True, slots=True)
class FailEntry:
    """VM entry failed: the hardware rejected the guest state."""

    hardware_entry_failure_reason: int
    cpu: int


@dataclass(frozen=True, slots=True)
class InternalError:
    """KVM gave up; for emulation failures `insn_bytes` may hold the instruction."""

    suberror: int
    data: tuple[int, ...]
    insn_bytes: bytes

    @property
    def is_emulation_failure(self) -> bool:
        return self.suberror == lib.KVM_INTERNAL_ERROR_EMULATION


@dataclass(frozen=True, slots=True)
class SystemEvent:
    type: int
    data: tuple[int, ...]

    @property
    def name(self) -> str:
        return SYSTEM_EVENT_NAMES.get(self.type, f"event {self.type}")


@dataclass(frozen=True, slots=True)
class Debug:
    """A single-step, breakpoint or watchpoint trap asked for with KVM_SET_GUEST_DEBUG."""

    exception: int  # 1 (#DB) or 3 (#BP)
    pc: int
    dr6: int
    dr7: int


@dataclass(frozen=True, slots=True)
class IrqWindowOpen:
    """The guest can take an external interrupt now (asked for with
    `request_interrupt_window`; KVM API doc 5, KVM_EXIT_IRQ_WINDOW_OPEN)."""


@dataclass(frozen=True, slots=True)
class IoapicEoi:
    """A LAPIC ended level-triggered `vector`, an IOAPIC's (split irqchip only;
    KVM API doc 5, KVM_EXIT_IOAPIC_EOI)."""

    vector: int


@dataclass(frozen=True, slots=True)
class Unknown:
    """Any exit pyvmm does not handle; `name` is the header's name for it."""

    reason: int

    @property
    def name(self) -> str:
        return exit_reason_name(self.reason)


VcpuExit = (
    IoIn
    | IoOut
    | MmioRead
    | MmioWrite
    | Hlt
    | Shutdown
    | FailEntry
    | InternalError
    | SystemEvent
    | Debug
    | IrqWindowOpen
    | IoapicEoi
    | Unknown
)

_HLT = Hlt()
_SHUTDOWN = Shutdown()
_IRQ_WINDOW_OPEN = IrqWindowOpen()


def decode(run: Any) -> VcpuExit:
    """Turn the exit described by `run` (a `struct kvm_run *`) into a VcpuExit."""
    reason = run.exit_reason
    if reason == lib.KVM_EXIT_IO:
        io = run.io
        base = ffi.cast("char *", run) + io.data_offset
        length = io.size * io.count
        if io.direction == lib.KVM_EXIT_IO_OUT:
            return IoOut(io.port, io.size, io.count, ffi.unpack(base, length))
        return IoIn(io.port, io.size, io.count, ffi.buffer(base, length))
    if reason == lib.KVM_EXIT_MMIO:
        mmio = run.mmio
        if mmio.is_write:
            return MmioWrite(mmio.phys_addr, mmio.len, bytes(mmio.data)[: mmio.len])
        return MmioRead(mmio.phys_addr, mmio.len, ffi.buffer(mmio.data, mmio.len))
    if reason == lib.KVM_EXIT_HLT:
        return _HLT
    if reason == lib.KVM_EXIT_SHUTDOWN:
        return _SHUTDOWN
    if reason == lib.KVM_EXIT_FAIL_ENTRY:
        failure = run.fail_entry
        return FailEntry(failure.hardware_entry_failure_reason, failure.cpu)
    if reason == lib.KVM_EXIT_INTERNAL_ERROR:
        return _decode_internal_error(run)
    if reason == lib.KVM_EXIT_SYSTEM_EVENT:
        event = run.system_event
        ndata = min(event.ndata, 16)
        return SystemEvent(event.type, tuple(event.data[0:ndata]))
    if reason == lib.KVM_EXIT_IRQ_WINDOW_OPEN:
        return _IRQ_WINDOW_OPEN
    if reason == lib.KVM_EXIT_IOAPIC_EOI:
        return IoapicEoi(run.eoi.vector)
    if reason == lib.KVM_EXIT_DEBUG:
        arch = run.debug.arch
        return Debug(arch.exception, arch.pc, arch.dr6, arch.dr7)
    return Unknown(reason)


def _decode_internal_error(run: Any) -> InternalError:
    internal = run.internal
    ndata = min(internal.ndata, 16)
    insn = b""
    failure = run.emulation_failure
    if (
        internal.suberror == lib.KVM_INTERNAL_ERROR_EMULATION
        and failure.flags & lib.KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
    ):
        insn = bytes(failure.insn_bytes)[: min(failure.insn_size, 15)]
    return InternalError(internal.suberror, tuple(internal.data[0:ndata]), insn)
