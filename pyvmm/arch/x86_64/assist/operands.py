"""Decode an instruction into operands (capstone), and compute memory operands' addresses.

Capstone says what the bytes are: mnemonic, length, each operand as a
register or a memory reference (base, index, scale, displacement, segment
override) and the address size. The arithmetic is ours: a register's value
at its width, and the effective address (Intel SDM vol. 1, 3.7.5 "Specifying
an Offset"; vol. 2A, 2.1.5 and 2.2.1.6 "RIP-Relative Addressing"), turned
into a linear address with the segment's base (vol. 3A, 3.4 "Logical and
Linear Addresses"; in 64-bit mode only FS and GS have one, 3.4.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from pyvmm.arch.x86_64.assist.state import GPR_NAMES, MASK64, CpuState


@dataclass(frozen=True)
class Register:
    """A general-purpose register at a width: `index` in encoding order, `shift` 8 for ah..bh."""

    name: str
    index: int
    size: int  # bytes
    shift: int = 0

    def read(self, state: CpuState) -> int:
        return (state.gpr(self.index) >> self.shift) & ((1 << (8 * self.size)) - 1)

    def write(self, state: CpuState, value: int) -> CpuState:
        """The state with this register set, as a write of its width does (SDM vol. 1,
        3.4.1.1: a 32-bit result is zero-extended to 64 bits; 8 and 16 bits merge)."""
        value &= (1 << (8 * self.size)) - 1
        if self.size == 4:
            return state.with_gpr(self.index, value)
        mask = ((1 << (8 * self.size)) - 1) << self.shift
        old = state.gpr(self.index)
        return state.with_gpr(self.index, (old & ~mask) | (value << self.shift))


def _register_table() -> dict[str, Register]:
    table: dict[str, Register] = {}
    legacy = ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di")
    for index, name in enumerate(GPR_NAMES):
        table[name] = Register(name, index, 8)
        if index < 8:
            base = legacy[index]
            table["e" + base] = Register("e" + base, index, 4)
            table[base] = Register(base, index, 2)
            low = base[0] + "l" if index < 4 else base + "l"  # al..bl, spl..dil
            table[low] = Register(low, index, 1)
            if index < 4:
                table[base[0] + "h"] = Register(base[0] + "h", index, 1, 8)
        else:
            for suffix, size in (("d", 4), ("w", 2), ("b", 1)):
                table[name + suffix] = Register(name + suffix, index, size)
    return table


REGISTERS = _register_table()


@dataclass(frozen=True)
class Xmm:
    """An XMM register, xmm0..xmm15."""

    index: int


XMM_REGISTERS = {f"xmm{index}": Xmm(index) for index in range(16)}
SEGMENT_NAMES = frozenset({"es", "cs", "ss", "ds", "fs", "gs"})


@dataclass(frozen=True)
class Memory:
    """A memory operand as encoded: [segment:] base + index * scale + disp, `size` bytes."""

    size: int
    base: str | None = None  # a register name, or "rip"/"eip"
    index: str | None = None
    scale: int = 1
    disp: int = 0
    segment: str | None = None  # an override prefix; None: the default segment


Operand = Register | Xmm | Memory


@dataclass(frozen=True)
class Decoded:
    """One instruction: what the table needs of it."""

    mnemonic: str
    size: int
    text: str
    operands: tuple[Operand, ...]
    address_bits: int  # 16, 32 or 64
    lock: bool


# Legacy prefixes (SDM vol. 2A, 2.1.1): a LOCK among them makes most instructions #UD.
_LEGACY_PREFIXES = frozenset(b"\xf0\xf2\xf3\x2e\x36\x3e\x26\x64\x65\x66\x67")


def has_lock_prefix(code: bytes, bits: int) -> bool:
    for byte in code:
        if byte == 0xF0:
            return True
        if byte in _LEGACY_PREFIXES or (bits == 64 and 0x40 <= byte <= 0x4F):
            continue
        return False
    return False


@cache
def _capstone(bits: int) -> Any:
    import capstone  # lazily: only an emulation failure gets here

    mode = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}[bits]
    disassembler = capstone.Cs(capstone.CS_ARCH_X86, mode)
    disassembler.detail = True
    return disassembler


@lru_cache(maxsize=1024)
def decode(code: bytes, bits: int) -> Decoded | None:
    """The first instruction of `code` in `bits`-bit code; None when the bytes are no instruction.

    Cached by the bytes: the kernel hits the same few sites over and over.
    WAIT (9b) is an instruction of its own, as the CPU runs it: `fclex` and
    `fstsw` are assemblers' names for WAIT followed by FNCLEX, FNSTSW.
    """
    from capstone import x86

    if code[:1] == b"\x9b":
        code = code[:1]

    disassembler = _capstone(bits)
    for insn in disassembler.disasm(code, 0, 1):
        operands: list[Operand] = []
        for op in insn.operands:
            if op.type == x86.X86_OP_REG:
                name = insn.reg_name(op.reg)
                register = REGISTERS.get(name) or XMM_REGISTERS.get(name)
                if register is None:  # mm, ymm, segment, control registers: not ours
                    return _unsupported(insn)
                operands.append(register)
            elif op.type == x86.X86_OP_MEM:
                mem = op.mem
                segment = insn.reg_name(mem.segment) if mem.segment else None
                operands.append(
                    Memory(
                        op.size,
                        insn.reg_name(mem.base) if mem.base else None,
                        insn.reg_name(mem.index) if mem.index else None,
                        mem.scale,
                        mem.disp,
                        segment,
                    )
                )
            else:
                return _unsupported(insn)
        return Decoded(
            insn.mnemonic.split()[-1],  # "lock cmpxchg16b": the prefix is in `lock`
            insn.size,
            f"{insn.mnemonic} {insn.op_str}".strip(),
            tuple(operands),
            8 * insn.addr_size,
            has_lock_prefix(bytes(insn.bytes), bits),
        )
    return None


def _unsupported(insn: Any) -> Decoded:
    """An instruction with operands the table has no use for: a name, no operands."""
    text = f"{insn.mnemonic} {insn.op_str}".strip()
    return Decoded(insn.mnemonic.split()[-1], insn.size, text, (), 0, False)


def effective_address(
    operand: Memory, state: CpuState, instruction_size: int, address_bits: int
) -> int:
    """The operand's offset in its segment: base + index * scale + disp, at the address size.

    RIP-relative (base "rip" or "eip") counts from the next instruction.
    """
    mask = (1 << address_bits) - 1
    offset = operand.disp
    if operand.base in ("rip", "eip"):
        offset += state.rip + instruction_size
    elif operand.base is not None:
        offset += REGISTERS[operand.base].read(state)
    if operand.index is not None:
        offset += REGISTERS[operand.index].read(state) * operand.scale
    return offset & mask


def default_segment(operand: Memory) -> str:
    """DS, or SS for a base of rsp/rbp (SDM vol. 1, 3.7.4.1 "Segmentation in 64-Bit Mode"
    and table 3-5 "Default Segment Selection Rules")."""
    if operand.segment is not None:
        return operand.segment
    base = operand.base
    if base is not None and base not in ("rip", "eip") and REGISTERS[base].index in (4, 5):
        return "ss"
    return "ds"


def linear_address(
    operand: Memory, state: CpuState, instruction_size: int, address_bits: int
) -> int:
    """The linear address of a memory operand: the segment's base plus the effective address."""
    offset = effective_address(operand, state, instruction_size, address_bits)
    segment = default_segment(operand)
    if state.bits == 64:
        base = state.segment_bases[segment] if segment in ("fs", "gs") else 0
        return (base + offset) & MASK64
    return (state.segment_bases[segment] + offset) & 0xFFFF_FFFF
