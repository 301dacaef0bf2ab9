"""Say in one line which guest instruction KVM could not run, and where.

KVM exits with KVM_EXIT_INTERNAL_ERROR, suberror KVM_INTERNAL_ERROR_EMULATION,
when its instruction emulator gives up: an instruction it does not implement
(x87, most SSE) that it had to emulate, or code it had to fetch from a
guest-physical address no memory slot backs. Newer kernels pass the bytes they
fetched (flag KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES, decoded in
`pyvmm.kvm.exits`); older ones, and failed fetches, pass none, so the bytes
are then read through the guest's own page tables. An instruction that
uses SSE registers while the guest has SSE off gets what to do about it
(`pyvmm.arch.x86_64.sse_state`). Pure over kvm_regs, kvm_sregs and GuestMemory.
"""

from __future__ import annotations

from pyvmm._kvm import lib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from typing import Any

    from pyvmm.arch.x86_64.instruction import Instruction
    from pyvmm.kvm.exits import InternalError
    from pyvmm.memory.guest_memory import GuestMemory

# The instruction decoder and the page walk are imported when an error is
# described: the exit loop imports this module for every run.

# Every suberror <linux/kvm.h> defines, with the header's own comment for it.
SUBERRORS: dict[int, tuple[str, str]] = {
    lib.KVM_INTERNAL_ERROR_EMULATION: ("KVM_INTERNAL_ERROR_EMULATION", "emulation failed"),
    lib.KVM_INTERNAL_ERROR_SIMUL_EX: (
        "KVM_INTERNAL_ERROR_SIMUL_EX",
        "unexpected simultaneous exceptions",
    ),
    lib.KVM_INTERNAL_ERROR_DELIVERY_EV: (
        "KVM_INTERNAL_ERROR_DELIVERY_EV",
        "unexpected VM exit while delivering an event",
    ),
    lib.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: (
        "KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON",
        "unexpected VM exit reason",
    ),
}


def suberror_name(suberror: int) -> str:
    return SUBERRORS[suberror][0] if suberror in SUBERRORS else f"suberror {suberror}"


def describe_internal_error(
    exit: InternalError,
    regs: Any,
    sregs: Any,
    memory: GuestMemory | None,
    max_phys_bits: int = 52,
) -> str:
    """One line for a KVM_EXIT_INTERNAL_ERROR, naming the instruction when there is one."""
    where = describe_location(regs, sregs)
    if exit.is_emulation_failure:
        return _describe_emulation_failure(exit, regs, sregs, memory, max_phys_bits, where)
    text = f"KVM internal error {suberror_name(exit.suberror)}"
    if exit.suberror in SUBERRORS:
        text += f" ({SUBERRORS[exit.suberror][1]})"
    text += f" at {where}"
    # The words' meaning is vendor- and kernel-specific (not ABI): shown raw.
    if exit.data:
        text += ", data " + " ".join(f"0x{word:x}" for word in exit.data)
    return text


def describe_location(regs: Any, sregs: Any) -> str:
    """`CS:IP (linear 0x...) in N-bit code`: a 16-bit IP in 4 digits, others in 8 or more."""
    from pyvmm.arch.x86_64.instruction import code_bits, linear_address

    bits = code_bits(sregs)
    linear = linear_address(sregs, regs.rip)
    ip = f"{regs.rip & 0xFFFF:04x}" if bits == 16 else f"{regs.rip:08x}"
    return f"{sregs.cs.selector:04x}:{ip} (linear 0x{linear:x}) in {bits}-bit code"


def _describe_emulation_failure(
    exit: InternalError,
    regs: Any,
    sregs: Any,
    memory: GuestMemory | None,
    max_phys_bits: int,
    where: str,
) -> str:
    from pyvmm.arch.x86_64.instruction import MAX_INSTRUCTION_SIZE, code_bits, linear_address
    from pyvmm.arch.x86_64.sse_state import sse_off_hint

    name = suberror_name(exit.suberror)
    bits = code_bits(sregs)
    linear = linear_address(sregs, regs.rip)
    if exit.insn_bytes:
        what, instruction = _describe_code(exit.insn_bytes, bits, linear)
    else:
        code, problem = _read_code(memory, sregs, linear, max_phys_bits)
        if problem is not None:
            return f"KVM could not emulate the instruction at {where}: {problem} ({name})"
        source = "read from guest memory: KVM gave no bytes"
        what, instruction = _describe_code(
            code, bits, linear, source, ram_ends=len(code) < MAX_INSTRUCTION_SIZE
        )
    text = f"KVM could not emulate {what} at {where} ({name})"
    hint = None
    if instruction is not None:
        hint = sse_off_hint(instruction.text, sregs) or kernel_gate_hint(instruction.text, sregs)
    return f"{text}: {hint}" if hint else text


# A host without VT-x/AMD-V (a software KVM backend) emulates CPL0 code, and its
# emulator may not do the protected-mode gate transfers: `int n` through the IDT
# and `iret`. Hardware interrupts are delivered all the same. The replacements
# keep to what such an emulator runs: popf, call and ret.
_IRET_32 = (
    "return to the same privilege level without it: `push 8(%esp); popf; ret $8` "
    "(EFLAGS from the frame, then EIP, dropping CS and EFLAGS)"
)
_IRET_64 = (
    "return to the same privilege level without it: restore RFLAGS with popfq and "
    "RSP from the frame, then jump to the saved RIP"
)


def kernel_gate_hint(text: str, sregs: Any) -> str | None:
    """What to do when KVM could not emulate `iret` or `int n` in protected-mode kernel code.

    Only KVM's instruction emulator runs such code where it fails (a host that
    emulates CPL0 code instead of running it on VT-x/AMD-V), so the failure
    itself is the probe. `text` is the disassembly; None for other cases.
    """
    mnemonic = text.split(" ", 1)[0]
    if not sregs.cr0 & 1 or sregs.cs.selector & 3:
        return None  # real mode, or user mode: not the case this explains
    emulator = "this host's KVM emulates kernel (CPL 0) code and cannot run"
    if mnemonic in ("iret", "iretd", "iretq"):
        return f"{emulator} iret there; {_IRET_64 if sregs.cs.l else _IRET_32}"
    if mnemonic in ("int", "int1", "into"):
        return (
            f"{emulator} a software interrupt there; call the handler instead "
            "(`pushf; push %cs; call handler`, as the gate would), and have it return "
            "without iret"
        )
    return None


def _describe_code(
    code: bytes, bits: int, linear: int, source: str = "", ram_ends: bool = False
) -> tuple[str, Instruction | None]:
    """`'mnemonic operands' (bytes)` and the instruction; KVM's window holds up to 15
    bytes: keep the first instruction's."""
    from pyvmm.arch.x86_64.instruction import disassemble_one

    note = f", {source}" if source else ""
    instruction = disassemble_one(code, bits, linear)
    if instruction is not None:
        return f"'{instruction.text}' ({instruction.code.hex(' ')}{note})", instruction
    if ram_ends:  # a truncated instruction, not a bad one
        note += f"; guest RAM ends after {len(code)} of them"
    return f"undecodable bytes ({code.hex(' ')}{note})", None


def _read_code(
    memory: GuestMemory | None, sregs: Any, linear: int, max_phys_bits: int
) -> tuple[bytes, str | None]:
    """The bytes at `linear`, or why there are none (the usual case: code outside RAM)."""
    from pyvmm.arch.x86_64.instruction import MAX_INSTRUCTION_SIZE, fetch
    from pyvmm.arch.x86_64.page_walk import PagingRegisters, walk

    if memory is None:
        return b"", "KVM gave no instruction bytes"
    paging = PagingRegisters(sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer)
    found = walk(memory, paging, linear, max_phys_bits)
    if found.gpa is None:
        problem = "KVM gave no instruction bytes and the code's address does not translate"
        return b"", f"{problem} ({found.fault})"
    if not memory.contains(found.gpa):
        problem = f"guest-physical 0x{found.gpa:x} has no memory slot"
        return b"", f"the code is not in guest RAM, {problem}"
    return fetch(memory, paging, linear, MAX_INSTRUCTION_SIZE, max_phys_bits), None
