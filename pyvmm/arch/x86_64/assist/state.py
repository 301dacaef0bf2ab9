"""The CPU state an assist reads, and what performing an instruction gives back (pure).

The general-purpose registers are in the order the instruction encoding
numbers them (Intel SDM vol. 2A, 2.1.5 "Addressing-Mode Encoding of ModR/M
and SIB Bytes", table 2-2 and 3.1.1.3 "REX"): rax, rcx, rdx, rbx, rsp, rbp,
rsi, rdi, r8..r15.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

GPR_NAMES = (
    "rax",
    "rcx",
    "rdx",
    "rbx",
    "rsp",
    "rbp",
    "rsi",
    "rdi",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
)

# RFLAGS bits (SDM vol. 1, 3.4.3 "EFLAGS Register").
RFLAGS_CF = 1 << 0
RFLAGS_PF = 1 << 2
RFLAGS_AF = 1 << 4
RFLAGS_ZF = 1 << 6
RFLAGS_SF = 1 << 7
RFLAGS_OF = 1 << 11
RFLAGS_VM = 1 << 17
RFLAGS_AC = 1 << 18
STATUS_FLAGS = RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF

# CR0 bits the x87 checks (SDM vol. 3A, 2.5 "Control Registers").
CR0_PE = 1 << 0
CR0_MP = 1 << 1
CR0_TS = 1 << 3
CR0_EM = 1 << 2
CR0_NE = 1 << 5
CR0_WP = 1 << 16
CR4_OSFXSR = 1 << 9  # SSE instructions enabled (SDM vol. 3A, 2.5)

# Exception vectors (SDM vol. 3A, table 6-1).
VECTOR_BP = 3
VECTOR_UD = 6
VECTOR_NM = 7
VECTOR_GP = 13
VECTOR_MF = 16

MASK64 = (1 << 64) - 1
SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs")


@dataclass(frozen=True)
class CpuState:
    """What an assist may read: registers, mode, segment bases and the x87 status.

    `bits` is the code's default operand size (16, 32 or 64), `cpl` the
    current privilege level, `segment_bases` each segment register's base,
    `fcw` and `fsw` the x87 control and status words, `xmm` the 16 XMM
    registers (128-bit integers) and `mxcsr` the SSE control/status register.
    """

    gprs: tuple[int, ...]
    rip: int
    rflags: int
    bits: int
    cpl: int = 0
    cr0: int = CR0_PE
    segment_bases: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEGMENTS, 0))
    cr4: int = 0
    fcw: int = 0x37F
    fsw: int = 0
    xmm: tuple[int, ...] = (0,) * 16
    mxcsr: int = 0x1F80

    def gpr(self, index: int) -> int:
        return self.gprs[index]

    def with_gpr(self, index: int, value: int) -> CpuState:
        gprs = list(self.gprs)
        gprs[index] = value & MASK64
        return replace(self, gprs=tuple(gprs))

    def advanced(self, size: int) -> CpuState:
        """RIP past an instruction of `size` bytes; IP and EIP wrap as the CPU's do."""
        mask = MASK64 if self.bits == 64 else (1 << self.bits) - 1
        return replace(self, rip=(self.rip + size) & mask)

    def with_rflags(self, rflags: int) -> CpuState:
        return replace(self, rflags=rflags)

    def with_xmm(self, index: int, value: int) -> CpuState:
        xmm = list(self.xmm)
        xmm[index] = value & ((1 << 128) - 1)
        return replace(self, xmm=tuple(xmm))


@dataclass(frozen=True)
class Exception_:
    """An exception to deliver before the guest's next instruction."""

    vector: int
    error_code: int | None = None


@dataclass(frozen=True)
class Performed:
    """The state after the instruction, and the exception it raised, if any.

    A fault (#UD, #NM, #MF, #GP) leaves the state as it was: RIP still at the
    instruction. A trap (#BP from int3) comes with RIP after it. `writes`
    are the memory stores, (linear address, bytes), in order. `atomic`: the
    one write is a locked read-modify-write of what the function read there,
    to be stored only if memory still holds it (else performed again).
    """

    state: CpuState
    exception: Exception_ | None = None
    writes: tuple[tuple[int, bytes], ...] = ()
    atomic: bool = False


def fault(state: CpuState, vector: int, error_code: int | None = None) -> Performed:
    return Performed(state, Exception_(vector, error_code))


class NotPerformed(Exception):
    """The instruction is in the table, but this case of it is not done by pyvmm (the reason)."""


class OperandFault(NotPerformed):
    """A memory operand pyvmm could not read: not mapped, or not RAM."""
