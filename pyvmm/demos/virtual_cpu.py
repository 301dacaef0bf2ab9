"""What x86's sensitive unprivileged instructions answer on the CPU a guest kernel believes in.

A trap-and-emulate VMM runs a guest kernel deprivileged (here: at CPL3) and
keeps, in software, the privileged state the kernel thinks it has: its own
GDTR and IDTR, LDTR, TR, CR0, its CS and SS at CPL0, its interrupt flag and
IOPL. `VirtualCpu.execute` performs one sensitive instruction against that
state, as the Intel SDM (vol. 2) defines it for CPL0, on the guest's
registers (`UserState`) and memory (guest-physical = linear: pyvmm's page
tables map the low 4 GiB one to one).

Instructions, with their SDM vol. 2 entries: SGDT, SIDT (4-stored limit and
base), SLDT, STR, SMSW, PUSHF/POPF (IF and IOPL are the virtual ones; at
CPL0 POPF may change both), MOV r, Sreg (the virtual CS and SS), LAR, LSL,
VERR, VERW (the checks of "LAR" and "LSL": DPL >= max(CPL, RPL) unless the
segment is conforming code; the descriptor read from the guest's own GDT).
Anything else raises NotSensitive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyvmm.errors import PyvmmError

MASK64 = (1 << 64) - 1
RFLAGS_ZF = 1 << 6
RFLAGS_IF = 1 << 9
RFLAGS_IOPL = 3 << 12
# What POPF may change at any CPL besides IF and IOPL: CF PF AF ZF SF DF OF AC ID.
RFLAGS_POPF_MASK = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800 | (1 << 18) | (1 << 21)

GPRS = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
)  # fmt: skip
# Capstone's register names, by width, for the legacy registers.
_LEGACY = {
    "rax": ("eax", "ax"),
    "rbx": ("ebx", "bx"),
    "rcx": ("ecx", "cx"),
    "rdx": ("edx", "dx"),
    "rsi": ("esi", "si"),
    "rdi": ("edi", "di"),
    "rbp": ("ebp", "bp"),
    "rsp": ("esp", "sp"),
}
REGISTER_NAMES: dict[str, tuple[str, int]] = {}
for _full, (_dword, _word) in _LEGACY.items():
    REGISTER_NAMES.update({_full: (_full, 64), _dword: (_full, 32), _word: (_full, 16)})
for _n in range(8, 16):
    REGISTER_NAMES.update({f"r{_n}": (f"r{_n}", 64), f"r{_n}d": (f"r{_n}", 32)})
    REGISTER_NAMES[f"r{_n}w"] = (f"r{_n}", 16)

# The instructions this module performs (capstone's mnemonics).
SENSITIVE_MNEMONICS = frozenset(
    {"sgdt", "sidt", "sldt", "str", "smsw", "pushfq", "popfq", "lar", "lsl", "verr", "verw"}
)
SEGMENT_REGISTERS = frozenset({"cs", "ss", "ds", "es", "fs", "gs"})


class NotSensitive(PyvmmError):
    """The instruction is not one the virtual CPU performs."""


@dataclass
class UserState:
    """The deprivileged guest's registers at the instruction: GPRs, RIP, RFLAGS (u64 each)."""

    registers: dict[str, int]
    rip: int
    rflags: int

    def read(self, name: str) -> int:
        full, bits = REGISTER_NAMES[name]
        return self.registers[full] & ((1 << bits) - 1)

    def write(self, name: str, value: int) -> None:
        """As the CPU writes a destination: a 32-bit one zero-extends, a 16-bit one merges."""
        full, bits = REGISTER_NAMES[name]
        if bits == 16:
            value = (self.registers[full] & ~0xFFFF) | (value & 0xFFFF)
        elif bits == 32:
            value &= 0xFFFF_FFFF
        self.registers[full] = value & MASK64

    def set_zf(self, value: bool) -> None:
        self.rflags = self.rflags | RFLAGS_ZF if value else self.rflags & ~RFLAGS_ZF


@dataclass
class Memory:
    """Guest memory by address: `read(address, size) -> bytes`, `write(address, data)`."""

    read: Callable[[int, int], bytes]
    write: Callable[[int, bytes], None]


@dataclass
class VirtualCpu:
    """The privileged state the guest kernel believes it has (selectors, bases, limits)."""

    gdt_base: int
    gdt_limit: int
    idt_base: int = 0
    idt_limit: int = 0
    ldtr: int = 0
    tr: int = 0
    cr0: int = 0
    cs: int = 0x08
    ss: int = 0x10
    interrupt_flag: bool = False
    iopl: int = 0
    cpl: int = 0
    # Instructions performed, by mnemonic (what the VMM did for the guest).
    performed: dict[str, int] = field(default_factory=dict)

    def rflags_seen(self, real: int) -> int:
        """RFLAGS as the guest must see them: the real arithmetic flags, the virtual IF and IOPL."""
        seen = real & ~(RFLAGS_IF | RFLAGS_IOPL)
        return seen | (RFLAGS_IF if self.interrupt_flag else 0) | self.iopl << 12

    def execute(self, instruction: Any, state: UserState, memory: Memory) -> None:
        """Perform one decoded instruction (a capstone CsInsn with detail) on `state`.

        `state.rip` is left alone: the caller moves past the instruction.
        Raises NotSensitive for any instruction not listed in the module docstring.
        """
        mnemonic = instruction.mnemonic
        operands = list(instruction.operands)
        if mnemonic == "mov" and _is_segment_source(instruction, operands):
            source = instruction.reg_name(operands[1].reg)
            value = {"cs": self.cs, "ss": self.ss}.get(source, 0)
            self._store(instruction, operands[0], state, memory, value)
        elif mnemonic in ("sgdt", "sidt"):
            base, limit = (
                (self.gdt_base, self.gdt_limit)
                if mnemonic == "sgdt"
                else (self.idt_base, self.idt_limit)
            )
            address = _address(instruction, operands[0], state)
            memory.write(address, limit.to_bytes(2, "little") + base.to_bytes(8, "little"))
        elif mnemonic in ("sldt", "str", "smsw"):
            value = {"sldt": self.ldtr, "str": self.tr, "smsw": self.cr0}[mnemonic]
            self._store(instruction, operands[0], state, memory, value)
        elif mnemonic == "pushfq":
            state.registers["rsp"] = (state.registers["rsp"] - 8) & (MASK64)
            memory.write(
                state.registers["rsp"], self.rflags_seen(state.rflags).to_bytes(8, "little")
            )
        elif mnemonic == "popfq":
            value = int.from_bytes(memory.read(state.registers["rsp"], 8), "little")
            state.registers["rsp"] = (state.registers["rsp"] + 8) & (MASK64)
            state.rflags = (state.rflags & ~RFLAGS_POPF_MASK) | (value & RFLAGS_POPF_MASK)
            self.interrupt_flag = bool(value & RFLAGS_IF)  # CPL0: POPF sets IF and IOPL
            self.iopl = (value & RFLAGS_IOPL) >> 12
        elif mnemonic in ("lar", "lsl", "verr", "verw"):
            selector = self._load(instruction, operands[-1], state, memory) & 0xFFFF
            answer = self.check_selector(mnemonic, selector, memory)
            state.set_zf(answer is not None)
            if answer is not None and mnemonic in ("lar", "lsl"):
                self._store(instruction, operands[0], state, memory, answer)
        else:
            raise NotSensitive(f"{mnemonic} {instruction.op_str}".strip())
        self.performed[mnemonic] = self.performed.get(mnemonic, 0) + 1

    def check_selector(self, mnemonic: str, selector: int, memory: Memory) -> int | None:
        """LAR's access rights, LSL's limit, or 0 for a VERR/VERW that passes; None: ZF=0."""
        index, table, rpl = selector >> 3, selector & 4, selector & 3
        if index == 0 or table or index * 8 + 7 > self.gdt_limit:
            return None
        descriptor = int.from_bytes(memory.read(self.gdt_base + index * 8, 8), "little")
        access = (descriptor >> 40) & 0xFF
        kind, system, dpl = access & 0xF, not access & 0x10, (access >> 5) & 3
        code = not system and bool(kind & 0x8)
        conforming = code and bool(kind & 0x4)
        if not conforming and dpl < max(self.cpl, rpl):
            return None
        if system:
            # 64-bit mode: LDT (2) and available/busy TSS (9, 0xB); LAR also call gates (0xC).
            allowed = {0x2, 0x9, 0xB} | ({0xC} if mnemonic == "lar" else set())
            if mnemonic in ("verr", "verw") or kind not in allowed:
                return None
        if mnemonic == "lar":
            # SDM: "masked by 00FxFF00H"; Intel CPUs keep limit 19:16 in the x.
            return (descriptor >> 32) & 0x00FF_FF00
        if mnemonic == "lsl":
            limit = (descriptor & 0xFFFF) | ((descriptor >> 32) & 0xF_0000)
            return (limit << 12) | 0xFFF if descriptor >> 55 & 1 else limit
        if mnemonic == "verr":
            return 0 if not code or kind & 0x2 else None
        return 0 if not code and kind & 0x2 else None  # verw: writable data

    def _store(
        self, instruction: Any, operand: Any, state: UserState, memory: Memory, value: int
    ) -> None:
        from capstone import x86

        if operand.type == x86.X86_OP_REG:
            state.write(instruction.reg_name(operand.reg), value)
        else:
            memory.write(
                _address(instruction, operand, state), (value & 0xFFFF).to_bytes(2, "little")
            )

    def _load(self, instruction: Any, operand: Any, state: UserState, memory: Memory) -> int:
        from capstone import x86

        if operand.type == x86.X86_OP_REG:
            return state.read(instruction.reg_name(operand.reg))
        return int.from_bytes(memory.read(_address(instruction, operand, state), 2), "little")


def _is_segment_source(instruction: Any, operands: list[Any]) -> bool:
    from capstone import x86

    return (
        len(operands) == 2
        and operands[1].type == x86.X86_OP_REG
        and instruction.reg_name(operands[1].reg) in SEGMENT_REGISTERS
    )


def _address(instruction: Any, operand: Any, state: UserState) -> int:
    """The linear address of a memory operand: base + index * scale + displacement."""
    mem = operand.mem
    address = mem.disp
    if mem.base:
        name = instruction.reg_name(mem.base)
        address += instruction.address + instruction.size if name == "rip" else state.read(name)
    if mem.index:
        address += state.read(instruction.reg_name(mem.index)) * mem.scale
    return address & (MASK64)


def is_sensitive(instruction: Any) -> bool:
    """Whether `execute` performs this instruction (and a translator must rewrite it)."""
    if instruction.mnemonic in SENSITIVE_MNEMONICS:
        return True
    return instruction.mnemonic == "mov" and _is_segment_source(
        instruction, list(instruction.operands)
    )
