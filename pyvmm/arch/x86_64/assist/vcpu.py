"""Perform, on a vCPU, an instruction KVM's emulator gave up on: the table's glue to KVM.

Reads the registers (KVM_GET_REGS, KVM_GET_SREGS, and KVM_GET_FPU for the
x87 entries), decodes the bytes KVM passed in the exit (or fetches them
through the guest's page tables), performs the table's entry, writes the
registers back (KVM_SET_REGS) and, for an instruction that raises an
exception, has KVM deliver it at the next entry (KVM_SET_VCPU_EVENTS,
exception.injected: KVM API doc 4.32). Memory operands are read through the
guest's page tables (page_walk.py), as the CPU would translate them.

A host with VT-x/AMD-V never gets here for these instructions: its CPU runs
them. Injecting #BP with RIP already past int3 is right on a host whose
emulator failed (it delivers the exception as a hardware one); VMX and SVM
deliver an injected #BP as a software exception and add the instruction's
length again, which is why nothing here is done without a failure first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyvmm.arch.x86_64.assist.operands import decode
from pyvmm.arch.x86_64.assist.state import (
    GPR_NAMES,
    RFLAGS_VM,
    SEGMENTS,
    CpuState,
    NotPerformed,
    OperandFault,
)
from pyvmm.arch.x86_64.assist.table import NEEDS_FPU, TABLE
from pyvmm.arch.x86_64.instruction import MAX_INSTRUCTION_SIZE, code_bits, fetch, linear_address
from pyvmm.arch.x86_64.page_walk import PagingRegisters
from pyvmm.arch.x86_64.virtual_memory import read_virtual
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


def state_from_kvm(regs: Any, sregs: Any, fpu: Any = None) -> CpuState:
    """A CpuState from kvm_regs, kvm_sregs and (for the x87 entries) kvm_fpu."""
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
        fcw=fpu.fcw if fpu is not None else 0x37F,
        fsw=fpu.fsw if fpu is not None else 0,
    )


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
    fpu = vcpu.get_fpu() if decoded.mnemonic in NEEDS_FPU else None
    state = state_from_kvm(regs, sregs, fpu)

    def read(linear: int, size: int) -> bytes:
        if memory is None:
            raise OperandFault("no guest memory to read the operand from")
        try:
            return read_virtual(memory, paging, linear, size, max_phys_bits)
        except GuestPageFault as error:
            # The CPU would raise #PF here; pyvmm does not make one up.
            raise OperandFault(f"its memory operand does not translate ({error})") from None
        except GuestMemoryError as error:
            raise OperandFault(f"its memory operand is not in guest RAM ({error})") from None

    try:
        performed = TABLE[decoded.mnemonic](decoded, state, read)
    except NotPerformed as why:
        return AssistResult(False, decoded.mnemonic, str(why))
    after = performed.state
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
