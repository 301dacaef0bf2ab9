"""A GDB remote serial protocol stub, as pure state machines.

Nothing in this package imports KVM or cffi: it is bytes in, bytes out, plus
calls on a `Target` (see `session.py`) that the VMM implements over a vCPU.
That keeps every protocol rule testable without /dev/kvm.

Modules, bottom up:

- `packets.py`: framing (`$data#cs`), acks, escapes, the Ctrl-C byte.
- `registers.py`: register layouts (x86-64, i386, i8086) and their packing.
- `target_xml.py`: the target description gdb reads via `qXfer:features:read`.
- `session.py`: the command state machine (`GdbSession`) and stop replies.

The errors live here so every module (and the VMM's `Target`) can raise them
without importing the session.
"""

from __future__ import annotations

from pyvmm.errors import PyvmmError


class GdbError(PyvmmError):
    """Root of the errors of the gdb stub and of the `Target` it drives."""


class MemoryAccessError(GdbError):
    """A guest-virtual range the target cannot read or write (unmapped page).

    The session answers it with ``E14`` (EFAULT); gdb then prints
    "Cannot access memory at address ...".
    """

    def __init__(self, gva: int, size: int, reason: str = "is not mapped") -> None:
        super().__init__(f"guest-virtual range 0x{gva:x}..0x{gva + size:x} {reason}")
        self.gva = gva
        self.size = size


class NoFreeDebugRegister(GdbError):
    """All four x86 debug address registers (DR0-DR3) are in use.

    The session answers it with ``E28`` (ENOSPC); gdb reports that it could not
    insert the hardware breakpoint or watchpoint.
    """


class RegisterDataError(GdbError, ValueError):
    """Register bytes that do not fit a layout (wrong length, duplicate names)."""


class UnknownCpuMode(GdbError, ValueError):
    """A `CpuView` mode other than "real", "protected" or "long"."""


__all__ = [
    "GdbError",
    "MemoryAccessError",
    "NoFreeDebugRegister",
    "RegisterDataError",
    "UnknownCpuMode",
]
