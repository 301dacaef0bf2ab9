"""Render vCPU registers for error reports (pure over kvm_regs/kvm_sregs)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from typing import Any

_GPRS = (
    ("rax", "rbx", "rcx", "rdx"),
    ("rsi", "rdi", "rsp", "rbp"),
    ("r8", "r9", "r10", "r11"),
    ("r12", "r13", "r14", "r15"),
)


def format_registers(regs: Any, sregs: Any) -> str:
    """A multi-line dump in the spirit of QEMU's `info registers`."""
    lines = [
        "  ".join(f"{name.upper():>3}={getattr(regs, name):016x}" for name in row) for row in _GPRS
    ]
    lines.append(f"RIP={regs.rip:016x}  RFLAGS={regs.rflags:08x}")
    for name in ("cs", "ds", "es", "fs", "gs", "ss", "tr"):
        segment = getattr(sregs, name)
        lines.append(
            f"{name.upper()} ={segment.selector:04x} base={segment.base:016x} "
            f"limit={segment.limit:08x} type={segment.type:x} dpl={segment.dpl} "
            f"db={segment.db} l={segment.l} p={segment.present}"
        )
    lines.append(
        f"GDT={sregs.gdt.base:016x}/{sregs.gdt.limit:04x}  "
        f"IDT={sregs.idt.base:016x}/{sregs.idt.limit:04x}"
    )
    lines.append(
        f"CR0={sregs.cr0:08x} CR2={sregs.cr2:016x} CR3={sregs.cr3:016x} "
        f"CR4={sregs.cr4:08x} EFER={sregs.efer:x}"
    )
    return "\n".join(lines)
