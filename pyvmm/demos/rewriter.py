"""A miniature binary translator: rewrite x86's sensitive unprivileged instructions to trap.

`rewrite(code, address)` decodes the guest's code with capstone (a linear
sweep of a flat image), finds every instruction that `virtual_cpu` performs
(the sensitive ones that do not trap at CPL3), and replaces each in place
with `hlt` followed by `nop`s up to the instruction's length. `hlt` is
privileged: at CPL3 it raises #GP on every x86 CPU, so the VMM gets
control exactly there, looks the address up in the side table, performs the
original instruction on the virtual CPU and resumes after it.

Why `hlt` and not `ud2` or a port write, the two classic choices: `pushf`
and `popf` are one byte long, and an in-place rewrite cannot make them
longer; `hlt` is the one-byte instruction that always traps at CPL3 (`int3`
traps too, but is a breakpoint a debugger may own). A translator with a code
cache (VMware's) copies blocks elsewhere and has no such limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyvmm.demos.virtual_cpu import is_sensitive

HLT = b"\xf4"
NOP = b"\x90"


@dataclass(frozen=True)
class Rewrite:
    """The rewritten code and the side table: trapping address -> the original instruction."""

    code: bytes
    side_table: dict[int, Any]  # capstone CsInsn (with detail), by its address

    def describe(self) -> list[str]:
        """One line per rewritten instruction: address, original, replacement bytes."""
        return [
            f"0x{address:x}  {instruction.mnemonic} {instruction.op_str}".rstrip()
            + f"  ->  hlt{' + nop' * (instruction.size - 1)}"
            for address, instruction in sorted(self.side_table.items())
        ]


def decoder() -> Any:
    """A capstone 64-bit x86 decoder with operand details."""
    import capstone

    decoder = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    decoder.detail = True
    decoder.skipdata = True  # bytes that are not code: step over, keep going
    return decoder


def rewrite(code: bytes, address: int) -> Rewrite:
    """`code` as it would be loaded at `address`, each sensitive instruction made to trap."""
    rewritten = bytearray(code)
    side_table: dict[int, Any] = {}
    for instruction in decoder().disasm(code, address):
        if instruction.id == 0 or not is_sensitive(instruction):  # id 0: skipped data
            continue
        offset = instruction.address - address
        rewritten[offset : offset + instruction.size] = HLT + NOP * (instruction.size - 1)
        side_table[instruction.address] = instruction
    return Rewrite(bytes(rewritten), side_table)


def decode_one(code: bytes, address: int) -> Any | None:
    """The instruction at the start of `code` (at `address`), or None if it does not decode."""
    for instruction in decoder().disasm(code, address, 1):
        return None if instruction.id == 0 else instruction
    return None
