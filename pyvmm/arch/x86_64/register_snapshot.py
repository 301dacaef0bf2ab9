"""`Registers`, a plain snapshot of one vCPU's registers (`Machine.registers()`).

A frozen dataclass, in a module of its own: only a caller that reads a
snapshot imports it (and dataclasses), not `pyvmm boot`'s start-up.
`pyvmm.arch.x86_64.registers.Registers` is this class too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyvmm.arch.x86_64.registers import CR0_PE, CR0_PG, EFER_LMA


@dataclass(frozen=True)
class Registers:
    """One vCPU's registers at one moment, as plain integers.

    A snapshot read with KVM_GET_REGS (KVM API doc 4.11: the general
    registers, RIP, RFLAGS) and KVM_GET_SREGS (4.13: segment registers,
    control registers, EFER); changing it changes nothing in the guest.
    Every field is an unsigned integer: general registers, RIP, RFLAGS, the
    control registers, EFER and the FS/GS bases are 64-bit values (Intel SDM
    vol. 1, 3.4 "Basic Program Execution Registers"; vol. 3A, 2.5 "Control
    Registers" and 2.2.1 "Extended Feature Enable Register"), `cs`..`ss` are
    the 16-bit segment selectors (vol. 3A, 3.4.2 "Segment Selectors").
    """

    rax: int
    rbx: int
    rcx: int
    rdx: int
    rsi: int
    rdi: int
    rsp: int
    rbp: int
    r8: int
    r9: int
    r10: int
    r11: int
    r12: int
    r13: int
    r14: int
    r15: int
    rip: int
    rflags: int
    cs: int
    ds: int
    es: int
    fs: int
    gs: int
    ss: int
    fs_base: int
    gs_base: int
    cr0: int
    cr2: int
    cr3: int
    cr4: int
    efer: int

    @classmethod
    def from_kvm(cls, regs: Any, sregs: Any) -> Registers:
        """From a `struct kvm_regs` and a `struct kvm_sregs` (cffi objects or look-alikes)."""
        general = {name: int(getattr(regs, name)) for name in _GENERAL}
        selectors = {name: int(getattr(sregs, name).selector) for name in _SELECTORS}
        control = {name: int(getattr(sregs, name)) for name in _CONTROL}
        return cls(
            **general,
            **selectors,
            fs_base=int(sregs.fs.base),
            gs_base=int(sregs.gs.base),
            **control,
        )

    @property
    def protected_mode(self) -> bool:
        """CR0.PE: segment protection is on (SDM vol. 3A, 2.5)."""
        return bool(self.cr0 & CR0_PE)

    @property
    def paging(self) -> bool:
        """CR0.PG: linear addresses go through page tables (SDM vol. 3A, 4.1)."""
        return bool(self.cr0 & CR0_PG)

    @property
    def long_mode(self) -> bool:
        """EFER.LMA: IA-32e (long) mode is active (SDM vol. 3A, 2.2.1)."""
        return bool(self.efer & EFER_LMA)

    def __str__(self) -> str:
        """Hexadecimal, four general registers a line, as in a `pyvmm boot` report."""
        lines = [
            "  ".join(f"{name.upper():>3}={getattr(self, name):016x}" for name in row)
            for row in (_GENERAL[first : first + 4] for first in range(0, 16, 4))
        ]
        lines.append(f"RIP={self.rip:016x}  RFLAGS={self.rflags:08x}")
        lines.append(" ".join(f"{name.upper()}={getattr(self, name):04x}" for name in _SELECTORS))
        lines.append(
            f"CR0={self.cr0:08x} CR2={self.cr2:016x} CR3={self.cr3:016x} "
            f"CR4={self.cr4:08x} EFER={self.efer:x}"
        )
        return "\n".join(lines)


_GENERAL = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
    "rip", "rflags",
)  # fmt: skip
_SELECTORS = ("cs", "ds", "es", "fs", "gs", "ss")
_CONTROL = ("cr0", "cr2", "cr3", "cr4", "efer")
