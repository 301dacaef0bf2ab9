"""Find and disassemble the guest instruction behind an exit.

The bytes are fetched through the guest's own page tables. Capstone is
imported only here, and only when something is disassembled.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from pyvmm.arch.x86_64.page_walk import PagingRegisters, walk
from pyvmm.arch.x86_64.registers import CR0_PE, EFER_LMA
from pyvmm.errors import GuestMemoryError
from pyvmm.memory.guest_memory import GuestMemory

MAX_INSTRUCTION_SIZE = 15
PAGE_SIZE = 0x1000
IO_MNEMONICS = frozenset({"in", "out"})
STRING_IO_MNEMONICS = frozenset({"insb", "insw", "insd", "outsb", "outsw", "outsd"})


@dataclass(frozen=True)
class Instruction:
    linear: int  # where it starts, as a linear (guest-virtual) address
    size: int
    text: str  # e.g. "out dx, al"
    code: bytes


def code_bits(sregs: Any) -> int:
    """16, 32 or 64: the default operand size the CPU decodes with right now."""
    if not sregs.cr0 & CR0_PE:
        return 16
    if sregs.efer & EFER_LMA and sregs.cs.l:
        return 64
    return 32 if sregs.cs.db else 16


def linear_address(sregs: Any, rip: int) -> int:
    """CS.base + RIP; in 64-bit code CS.base is ignored (SDM 3.4.4)."""
    if code_bits(sregs) == 64:
        return rip
    return (sregs.cs.base + rip) & 0xFFFF_FFFF


def fetch(
    memory: GuestMemory, paging: PagingRegisters, linear: int, size: int, max_phys_bits: int = 52
) -> bytes:
    """Up to `size` bytes at a linear address, page by page; shorter where unmapped."""
    data = bytearray()
    while len(data) < size:
        address = linear + len(data)
        found = walk(memory, paging, address, max_phys_bits)
        if found.gpa is None:
            break
        chunk = min(size - len(data), PAGE_SIZE - (address % PAGE_SIZE))
        try:
            data += memory.read(found.gpa, chunk)
        except GuestMemoryError:
            break
    return bytes(data)


@cache
def _disassembler(bits: int) -> Any:
    import capstone  # lazily: only tracing and error reports need it

    mode = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}[bits]
    return capstone.Cs(capstone.CS_ARCH_X86, mode)


def disassemble_one(code: bytes, bits: int, linear: int) -> Instruction | None:
    for insn in _disassembler(bits).disasm(code, linear, 1):
        text = f"{insn.mnemonic} {insn.op_str}".strip()
        return Instruction(linear, insn.size, text, bytes(insn.bytes))
    return None


def instruction_at(
    memory: GuestMemory, paging: PagingRegisters, sregs: Any, rip: int, max_phys_bits: int = 52
) -> Instruction | None:
    bits = code_bits(sregs)
    linear = linear_address(sregs, rip)
    code = fetch(memory, paging, linear, MAX_INSTRUCTION_SIZE, max_phys_bits)
    return disassemble_one(code, bits, linear) if code else None


def exit_instruction(
    memory: GuestMemory,
    paging: PagingRegisters,
    sregs: Any,
    rip: int,
    kind: str,
    max_phys_bits: int = 52,
) -> Instruction | None:
    """The instruction behind an exit of `kind` ("io", "hlt", anything else).

    KVM leaves RIP *after* an instruction it completed before exiting (a
    plain in/out, hlt) but *at* one it has still to finish (string I/O,
    MMIO), so look at RIP first, then for a matching instruction that ends
    exactly at RIP.
    """
    at_rip = instruction_at(memory, paging, sregs, rip, max_phys_bits)
    matches = {"io": _is_io, "hlt": _is_hlt}.get(kind)
    if matches is None or (at_rip is not None and matches(at_rip)):
        return at_rip
    bits = code_bits(sregs)
    linear = linear_address(sregs, rip)
    for size in (1, 2, 3):  # ee / e6 ib / 66 ee / f4: never longer than 3 bytes
        code = fetch(memory, paging, linear - size, size, max_phys_bits)
        candidate = disassemble_one(code, bits, linear - size) if len(code) == size else None
        if candidate is not None and candidate.size == size and matches(candidate):
            return candidate
    return at_rip


def _is_io(instruction: Instruction) -> bool:
    words = instruction.text.replace("rep ", "").split()
    return bool(words) and (words[0] in IO_MNEMONICS or words[0] in STRING_IO_MNEMONICS)


def _is_hlt(instruction: Instruction) -> bool:
    return instruction.text == "hlt"
