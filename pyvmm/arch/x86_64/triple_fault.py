"""Why a guest triple-faulted, when pyvmm can tell.

A triple fault (KVM_EXIT_SHUTDOWN) says only that the CPU gave up. Two causes
can be read from the guest's state:

- the host's: a KVM that cannot run 32-bit paging (kvm_pvm) refuses the
  guest's own `mov cr0` that turns paging on without long mode, and the guest,
  with no IDT yet, triple-faults on that very instruction. Recognised from the
  instruction at RIP, the value it would load and a probe of the host.
- no IDT: in protected or long mode with IDTR.limit 0 (pyvmm's entry state)
  no exception can be delivered: its gate is past the limit (#GP), so is #GP's
  (#DF) and #DF's, and the CPU shuts down (Intel SDM vol. 3A, 6.10 "Interrupt
  Descriptor Table", 6.15 "Interrupt 8"). Said with the instruction at RIP
  when it decodes, and, for one that needs SSE while SSE is off, what to do.

Anything else gets no explanation rather than a guess.
"""

from __future__ import annotations

from pyvmm.arch.x86_64.registers import CR0_PE, CR0_PG, EFER_LMA, EFER_LME
from pyvmm.errors import PyvmmError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from pyvmm.arch.x86_64.instruction import Instruction
    from pyvmm.memory.guest_memory import GuestMemory

# The instruction decoder and the page walk are imported when a triple fault is
# explained: the exit loop imports this module for every run.

_GPR32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")


def explain_triple_fault(
    regs: Any,
    sregs: Any,
    memory: GuestMemory,
    keeps_32bit_paging: Callable[[], bool],
    backend: str,
    max_phys_bits: int = 52,
) -> str | None:
    """The cause, to follow "guest triple-faulted", or None. `regs`/`sregs`: struct
    kvm_regs/kvm_sregs; `keeps_32bit_paging` probes the host (asked only if needed)."""
    if not sregs.cr0 & CR0_PE:
        return None  # real mode: the IVT, whose limit some backends do not check
    from pyvmm.arch.x86_64.instruction import instruction_at
    from pyvmm.arch.x86_64.page_walk import PagingRegisters

    paging = PagingRegisters(sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer)
    try:
        instruction = instruction_at(memory, paging, sregs, regs.rip, max_phys_bits)
    except PyvmmError:
        instruction = None
    paging_off = not sregs.efer & (EFER_LMA | EFER_LME) and not sregs.cr0 & CR0_PG
    if paging_off and instruction is not None:
        why = _explain_32bit_paging(regs, instruction, keeps_32bit_paging, backend)
        if why is not None:
            return why
    if sregs.idt.limit == 0:
        return _explain_no_idt(instruction, sregs)
    return None


def _explain_no_idt(instruction: Instruction | None, sregs: Any) -> str:
    text = "with no IDT (IDTR limit 0), so any exception ends in a triple fault"
    if instruction is None:
        return text
    from pyvmm.arch.x86_64.sse_state import sse_off_hint

    text += f"; at RIP: '{instruction.text}'"
    hint = sse_off_hint(instruction.text, sregs)
    return f"{text}: {hint}" if hint else text


def _explain_32bit_paging(
    regs: Any, instruction: Instruction, keeps_32bit_paging: Callable[[], bool], backend: str
) -> str | None:
    if not instruction.text.startswith("mov cr0, "):
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
