"""Perform, on a vCPU, an instruction KVM's emulator gave up on: the table's glue to KVM.

Reads the registers (KVM_GET_REGS, KVM_GET_SREGS, and KVM_GET_XSAVE for the
x87 and SSE entries: KVM_GET_FPU does not carry MXCSR), decodes the bytes
KVM passed in the exit (or fetches them through the guest's page tables),
performs the table's entry, stores what it writes to memory, writes the
registers back (KVM_SET_REGS, and KVM_SET_XSAVE when XMM registers or MXCSR
changed) and, for an instruction that raises an exception, has KVM deliver
it at the next entry (KVM_SET_VCPU_EVENTS, exception.injected: KVM API doc
4.32). Memory operands go through the guest's page tables (page_walk.py), as
the CPU would translate them; a store to a page the guest may not write is
not done. The XSAVE image is KVM_GET_XSAVE's 4 KiB: pyvmm gives its guests
no state that needs more (AMX).

A host with VT-x/AMD-V never gets here for these instructions: its CPU runs
them. Injecting #BP with RIP already past int3 is right on a host whose
emulator failed (it delivers the exception as a hardware one); VMX and SVM
may deliver an injected #BP as a software exception, counting the
instruction's length again: nothing here is done without a failure first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyvmm._kvm import ffi, lib
from pyvmm.arch.x86_64.assist.operands import decode
from pyvmm.arch.x86_64.assist.state import (
    CR0_WP,
    GPR_NAMES,
    RFLAGS_VM,
    SEGMENTS,
    CpuState,
    NotPerformed,
    OperandFault,
)
from pyvmm.arch.x86_64.assist.table import NEEDS_FPU, TABLE
from pyvmm.arch.x86_64.instruction import MAX_INSTRUCTION_SIZE, code_bits, fetch, linear_address
from pyvmm.arch.x86_64.page_walk import PagingRegisters, walk
from pyvmm.arch.x86_64.virtual_memory import read_virtual, write_virtual
from pyvmm.errors import GuestMemoryError, GuestPageFault
from pyvmm.memory.guest_memory import GuestMemory


@dataclass(frozen=True)
class AssistResult:
    """`mnemonic` performed (the guest may resume), or why not (`reason`, None when the
    instruction is not in the table or the bytes are none)."""

    performed: bool
    mnemonic: str | None = None
    reason: str | None = None


NOT_IN_TABLE = AssistResult(False)


# The XSAVE image's legacy region (Intel SDM vol. 1, 10.5.1, table 10-2) and header.
XSAVE_FCW = 0
XSAVE_FSW = 2
XSAVE_MXCSR = 24
XSAVE_XMM = 160
XSAVE_XSTATE_BV = 512
XSTATE_X87_SSE = 0b11  # XSTATE_BV: the legacy region's x87 and SSE parts are meant


def state_from_kvm(regs: Any, sregs: Any, xsave: Any = None) -> CpuState:
    """A CpuState from kvm_regs, kvm_sregs and (for the x87 and SSE entries) kvm_xsave."""
    bits = code_bits(sregs)
    if not sregs.cr0 & 1:
        cpl = 0  # real mode
    elif regs.rflags & RFLAGS_VM:
        cpl = 3  # virtual-8086 mode
    else:
        cpl = sregs.cs.selector & 3
    return CpuState(
        gprs=tuple(getattr(regs, name) for name in GPR_NAMES),
        rip=regs.rip,
        rflags=regs.rflags,
        bits=bits,
        cpl=cpl,
        cr0=sregs.cr0,
        segment_bases={name: getattr(sregs, name).base for name in SEGMENTS},
        cr4=sregs.cr4,
        **(_fpu_state(xsave) if xsave is not None else {}),
    )


def _fpu_state(xsave: Any) -> dict[str, Any]:
    data = ffi.buffer(xsave.region)[0 : XSAVE_XSTATE_BV + 8]

    def word(offset: int, size: int) -> int:
        return int.from_bytes(data[offset : offset + size], "little")

    xmm = tuple(word(XSAVE_XMM + 16 * index, 16) for index in range(16))
    return {
        "fcw": word(XSAVE_FCW, 2),
        "fsw": word(XSAVE_FSW, 2),
        "xmm": xmm,
        "mxcsr": word(XSAVE_MXCSR, 4),
    }


def _store_sse(vcpu: Any, xsave: Any, state: CpuState) -> None:
    """KVM_SET_XSAVE with `state`'s x87 status word, XMM registers and MXCSR."""
    region = ffi.buffer(xsave.region)
    region[XSAVE_FSW : XSAVE_FSW + 2] = state.fsw.to_bytes(2, "little")
    region[XSAVE_MXCSR : XSAVE_MXCSR + 4] = state.mxcsr.to_bytes(4, "little")
    for index, value in enumerate(state.xmm):
        start = XSAVE_XMM + 16 * index
        region[start : start + 16] = value.to_bytes(16, "little")
    header = XSAVE_XSTATE_BV
    bv = int.from_bytes(region[header : header + 8], "little") | XSTATE_X87_SSE
    region[header : header + 8] = bv.to_bytes(8, "little")
    vcpu.set_xsave(xsave)


# How many times a locked instruction is performed again when memory changed under it.
ATOMIC_TRIES = 1000


def _store_atomic(
    memory: GuestMemory,
    paging: PagingRegisters,
    writes: tuple[tuple[int, bytes], ...],
    reads: dict[int, bytes],
    max_phys_bits: int,
) -> bool:
    """The one 16-byte store of a locked instruction, made with the host's own LOCK
    CMPXCHG16B on guest RAM: only if memory still holds what was read (then True)."""
    ((linear, data),) = writes
    old = reads[linear]
    found = walk(memory, paging, linear, max_phys_bits)
    if found.gpa is None or len(data) != 16 or len(old) != 16:
        raise AssertionError("a locked store is 16 bytes the instruction read")
    expected = ffi.new(
        "uint64_t[2]", [int.from_bytes(old[:8], "little"), int.from_bytes(old[8:], "little")]
    )
    low, high = int.from_bytes(data[:8], "little"), int.from_bytes(data[8:], "little")
    return bool(lib.pyvmm_cmpxchg16b(memory.host_address(found.gpa), expected, low, high))


def check_writable(
    memory: GuestMemory,
    paging: PagingRegisters,
    state: CpuState,
    linear: int,
    size: int,
    max_phys_bits: int,
) -> str | None:
    """Why the CPU would not store `size` bytes at `linear` (None: it would): a page not
    mapped, read-only with CR0.WP set or at CPL 3, or a kernel page at CPL 3."""
    page = linear & ~0xFFF
    while page < linear + size:
        found = walk(memory, paging, page, max_phys_bits)
        if found.gpa is None or found.flags is None:
            return f"its memory operand at 0x{page:x} does not translate ({found.fault})"
        if not found.flags.writable and (state.cpl == 3 or state.cr0 & CR0_WP):
            return f"its memory operand at 0x{page:x} is on a read-only page"
        if state.cpl == 3 and not found.flags.user:
            return f"its memory operand at 0x{page:x} is on a kernel page"
        page += 0x1000
    return None


def assist(
    vcpu: Any, insn_bytes: bytes, memory: GuestMemory | None, max_phys_bits: int = 52
) -> AssistResult:
    """Perform the instruction at the vCPU's RIP if the table has it; resume-ready on success."""
    regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
    bits = code_bits(sregs)
    paging = PagingRegisters(sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer)
    code = insn_bytes
    if not code and memory is not None:
        linear = linear_address(sregs, regs.rip)
        code = fetch(memory, paging, linear, MAX_INSTRUCTION_SIZE, max_phys_bits)
    decoded = decode(bytes(code), bits) if code else None
    if decoded is None or decoded.mnemonic not in TABLE:
        return NOT_IN_TABLE
    xsave = vcpu.get_xsave() if decoded.mnemonic in NEEDS_FPU else None
    state = state_from_kvm(regs, sregs, xsave)

    def read(linear: int, size: int) -> bytes:
        if memory is None:
            raise OperandFault("no guest memory to read the operand from")
        try:
            return read_virtual(memory, paging, linear, size, max_phys_bits)
        except GuestPageFault as error:
            # The CPU would raise #PF here; pyvmm does not make one up.
            raise OperandFault(f"its memory operand: {error}") from None
        except GuestMemoryError as error:
            raise OperandFault(f"its memory operand: {error}") from None

    perform = TABLE[decoded.mnemonic]
    reads: dict[int, bytes] = {}  # what the instruction read, by linear address

    def recording(linear: int, size: int) -> bytes:
        reads[linear] = read(linear, size)
        return reads[linear]

    for _ in range(ATOMIC_TRIES):
        reads.clear()
        try:
            performed = perform(decoded, state, recording)
        except NotPerformed as why:
            return AssistResult(False, decoded.mnemonic, str(why))
        for linear, data in performed.writes:
            problem = (
                "no guest memory to write to"
                if memory is None
                else check_writable(memory, paging, state, linear, len(data), max_phys_bits)
            )
            if problem is not None:  # the CPU would raise #PF; pyvmm does not make one up
                return AssistResult(False, decoded.mnemonic, problem)
        if not performed.writes:
            break
        assert memory is not None
        if performed.atomic:
            if _store_atomic(memory, paging, performed.writes, reads, max_phys_bits):
                break
            continue  # another vCPU or a device changed it meanwhile: again, as the CPU would
        try:
            for linear, data in performed.writes:
                write_virtual(memory, paging, linear, data, max_phys_bits)
        except (GuestPageFault, GuestMemoryError) as error:
            return AssistResult(False, decoded.mnemonic, f"its memory operand: {error}")
        break
    else:
        return AssistResult(False, decoded.mnemonic, "its memory operand kept changing")
    after = performed.state
    if xsave is not None and (
        after.xmm != state.xmm or after.mxcsr != state.mxcsr or after.fsw != state.fsw
    ):
        _store_sse(vcpu, xsave, after)
    for index, name in enumerate(GPR_NAMES):
        setattr(regs, name, after.gprs[index])
    regs.rip = after.rip
    regs.rflags = after.rflags
    vcpu.set_regs(regs)
    if performed.exception is not None:
        events = vcpu.get_vcpu_events()
        exception = events.exception
        exception.injected = 1
        exception.pending = 0
        exception.nr = performed.exception.vector
        error_code = performed.exception.error_code
        exception.has_error_code = 0 if error_code is None else 1
        exception.error_code = 0 if error_code is None else error_code
        vcpu.set_vcpu_events(events)
    return AssistResult(True, decoded.mnemonic)
