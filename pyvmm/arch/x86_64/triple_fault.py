"""Why a guest triple-faulted, when pyvmm can tell.

A triple fault (KVM_EXIT_SHUTDOWN) says only that the CPU gave up. One cause
is the host's, not the guest's: a KVM that cannot run 32-bit paging (kvm_pvm)
refuses the guest's own `mov cr0` that turns paging on without long mode, and
the guest, with no IDT yet, triple-faults on that very instruction. That case
is recognised from the instruction at RIP, the value it would load and a probe
of the host; anything else gets no explanation rather than a guess.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyvmm.arch.x86_64.instruction import instruction_at
from pyvmm.arch.x86_64.page_walk import PagingRegisters
from pyvmm.arch.x86_64.registers import CR0_PE, CR0_PG, EFER_LMA, EFER_LME
from pyvmm.errors import PyvmmError
from pyvmm.memory.guest_memory import GuestMemory

_GPR32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")


def explain_triple_fault(
    regs: Any,
    sregs: Any,
    memory: GuestMemory,
    keeps_32bit_paging: Callable[[], bool],
    backend: str,
    max_phys_bits: int = 52,
) -> str | None:
    """A sentence on the cause, or None. `regs`/`sregs`: struct kvm_regs/kvm_sregs."""
    if not sregs.cr0 & CR0_PE or sregs.efer & (EFER_LMA | EFER_LME) or sregs.cr0 & CR0_PG:
        return None
    paging = PagingRegisters(sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer)
    try:
        instruction = instruction_at(memory, paging, sregs, regs.rip, max_phys_bits)
    except PyvmmError:
        return None
    if instruction is None or not instruction.text.startswith("mov cr0, "):
        return None
    source = instruction.text.removeprefix("mov cr0, ")
    if source not in _GPR32:
        return None
    value = getattr(regs, "r" + source[1:])
    if not value & CR0_PG:
        return None
    try:
        if keeps_32bit_paging():
            return None
    except PyvmmError:
        return None
    return (
        f"at '{instruction.text}' (CR0 0x{value & 0xFFFF_FFFF:x}), which turns on 32-bit "
        f"paging: this host's KVM, {backend}, cannot run 32-bit paging (long mode's 4-level "
        "paging works)"
    )
